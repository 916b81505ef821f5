fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let tree = edgec_core::syntax::parse(&text);
    println!("{:#?}", tree.errors);
    for e in &tree.entries {
        println!(
            "{} {:?} span={:?} value={:?} block={}",
            e.key.name,
            e.label.as_ref().map(|l| &l.name),
            e.span,
            e.value.as_ref().map(|v| &v.kind),
            e.block.as_ref().map_or(0, |b| b.entries.len())
        );
    }
    println!("comments {:?}", tree.comments);
}
