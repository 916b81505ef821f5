//! A minimal indented line writer; the canonical formatter settles the final layout.

#[derive(Debug, Default)]
pub struct Lines {
    text: String,
    depth: usize,
}

impl Lines {
    pub fn line(&mut self, line: impl AsRef<str>) {
        for _ in 0..self.depth {
            self.text.push_str("  ");
        }
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    /// `header {`, with the following lines one level deeper until [`Lines::close`].
    pub fn open(&mut self, header: impl AsRef<str>) {
        self.line(format!("{} {{", header.as_ref()));
        self.depth += 1;
    }

    pub fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("}");
    }

    pub fn blank(&mut self) {
        self.text.push('\n');
    }

    pub fn into_text(self) -> String {
        self.text
    }
}
