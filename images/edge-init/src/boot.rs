//! Slot selection with boot counting. The state lives in the type-specific attribute bits of
//! the two root partitions' GPT entries (as on ChromeOS): bits 48–51 priority, 52–55 tries left,
//! bit 56 successful. Keeping it in the partition table means it needs no file system, survives
//! any damage to the slots themselves, and is rewritten in one sector-sized step per copy.

use std::fs::File;

use serde::{Deserialize, Serialize};

use crate::gpt::{GptError, Table};

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u64 = 1 << 56;
const STATE_MASK: u64 = 0x1FF << 48;

/// One of the two root slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// The first slot, booted first on a new device.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The lowercase letter used in partition names.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    /// The root partition's name.
    pub fn root_name(self) -> String {
        format!("root-{}", self.letter())
    }

    /// The verity hash partition's name.
    pub fn verity_name(self) -> String {
        format!("root-{}-verity", self.letter())
    }

    /// The root hash signature partition's name.
    pub fn signature_name(self) -> String {
        format!("root-{}-verity-sig", self.letter())
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// A slot's boot-counting state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotState {
    /// 0 means never boot it; otherwise the higher priority boots first.
    pub priority: u8,
    /// Boots left before an unconfirmed slot is given up.
    pub tries: u8,
    /// The slot has reached "healthy" (edged up with its deployment) at least once.
    pub successful: bool,
}

impl SlotState {
    /// A freshly written slot: `tries` boots to prove itself.
    pub fn fresh(priority: u8, tries: u8) -> Self {
        Self {
            priority: priority.min(15),
            tries: tries.min(15),
            successful: false,
        }
    }

    /// Reads the state from a GPT entry's attributes.
    pub fn from_attributes(attributes: u64) -> Self {
        Self {
            priority: ((attributes >> PRIORITY_SHIFT) & 0xF) as u8,
            tries: ((attributes >> TRIES_SHIFT) & 0xF) as u8,
            successful: attributes & SUCCESSFUL_BIT != 0,
        }
    }

    /// Writes the state into a GPT entry's attributes, keeping every other bit.
    pub fn to_attributes(self, attributes: u64) -> u64 {
        (attributes & !STATE_MASK)
            | (u64::from(self.priority.min(15)) << PRIORITY_SHIFT)
            | (u64::from(self.tries.min(15)) << TRIES_SHIFT)
            | if self.successful { SUCCESSFUL_BIT } else { 0 }
    }

    /// Whether the slot may be booted.
    pub fn bootable(self) -> bool {
        self.priority > 0 && (self.successful || self.tries > 0)
    }

    /// The state to record before booting the slot: an unconfirmed slot spends one try, so a
    /// slot that hangs or crashes before confirming runs out of tries and is skipped.
    pub fn spend_try(self) -> Self {
        if self.successful {
            self
        } else {
            Self {
                tries: self.tries.saturating_sub(1),
                ..self
            }
        }
    }

    /// The state after the slot came up healthy.
    pub fn confirmed(self) -> Self {
        Self {
            tries: 0,
            successful: true,
            ..self
        }
    }

    /// The state of a slot that failed a check (signature, verity, mount, runtime): never
    /// booted again until an update rewrites it.
    pub fn abandoned(self) -> Self {
        Self::default()
    }
}

/// The states after an update was written to `updated`: it boots next, with `tries` boots to
/// reach ready, and the running slot stays bootable below it as the fallback. Returns the new
/// (A, B) states.
pub fn stage_update(
    updated: Slot,
    tries: u8,
    a: SlotState,
    b: SlotState,
) -> (SlotState, SlotState) {
    let (target, fallback) = match updated {
        Slot::A => (a, b),
        Slot::B => (b, a),
    };
    let fallback = SlotState {
        priority: fallback.priority.clamp(1, 14),
        ..fallback
    };
    let target = SlotState::fresh(fallback.priority.max(target.priority.min(14)) + 1, tries);
    match updated {
        Slot::A => (target, fallback),
        Slot::B => (fallback, target),
    }
}

/// A slot's state as the partition table records it; an error if the table has no root
/// partition for the slot, since such a disk is not one this scheme laid out.
pub fn read_slot_state(table: &Table, slot: Slot) -> Result<SlotState, GptError> {
    let (_, root) = table
        .find(&slot.root_name())
        .ok_or_else(|| GptError::MissingPartition(slot.root_name()))?;
    Ok(SlotState::from_attributes(root.attributes))
}

/// Records the states of one or both slots in `table` and writes it to `disk`: both copies
/// of the table in one pass, then fsync, so that the states are on the disk when this
/// returns. Nothing is written when a slot has no root partition.
pub fn write_slot_states(
    table: &mut Table,
    disk: &mut File,
    states: &[(Slot, SlotState)],
) -> Result<(), GptError> {
    for (slot, _) in states {
        read_slot_state(table, *slot)?;
    }
    for (slot, state) in states {
        let name = slot.root_name();
        if let Some(root) = table.partitions.iter_mut().find(|entry| entry.name == name) {
            root.attributes = state.to_attributes(root.attributes);
        }
    }
    table.write(disk)?;
    disk.sync_all()?;
    Ok(())
}

/// The slots to try in order: bootable ones by priority, A first on a tie.
pub fn boot_order(a: SlotState, b: SlotState) -> Vec<Slot> {
    let mut order: Vec<(Slot, SlotState)> = vec![(Slot::A, a), (Slot::B, b)]
        .into_iter()
        .filter(|(_, state)| state.bootable())
        .collect();
    order.sort_by_key(|(slot, state)| (std::cmp::Reverse(state.priority), *slot == Slot::B));
    order.into_iter().map(|(slot, _)| slot).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_attributes_without_touching_other_bits() {
        let state = SlotState {
            priority: 2,
            tries: 3,
            successful: true,
        };
        let other_bits = (1 << 60) | 1;
        let attributes = state.to_attributes(other_bits);
        assert_eq!(SlotState::from_attributes(attributes), state);
        assert_eq!(attributes & other_bits, other_bits);
    }

    #[test]
    fn an_unconfirmed_slot_runs_out_of_tries_and_the_other_boots() {
        let mut a = SlotState::fresh(2, 2);
        let b = SlotState::fresh(1, 2).confirmed();
        for _ in 0..2 {
            assert_eq!(boot_order(a, b)[0], Slot::A);
            a = a.spend_try();
        }
        assert_eq!(boot_order(a, b), vec![Slot::B]);
    }

    #[test]
    fn a_staged_update_boots_next_and_falls_back_once_its_tries_are_spent() {
        let a = SlotState::fresh(2, 3).spend_try().confirmed();
        let (a, mut b) = stage_update(Slot::B, 2, a, SlotState::default());
        assert_eq!(boot_order(a, b), vec![Slot::B, Slot::A]);
        b = b.spend_try().spend_try();
        assert_eq!(boot_order(a, b), vec![Slot::A]);
        // After B is confirmed, an update of A goes above it again.
        let b = SlotState::fresh(3, 1).confirmed();
        let (a, b) = stage_update(Slot::A, 2, a, b);
        assert_eq!(boot_order(a, b), vec![Slot::A, Slot::B]);
    }

    fn disk_with_roots(names: &[&str]) -> (tempfile::NamedTempFile, Table) {
        let table = Table {
            disk_guid: uuid::Uuid::nil(),
            disk_sectors: 8192,
            partitions: names
                .iter()
                .enumerate()
                .map(|(index, name)| crate::gpt::Partition {
                    type_guid: uuid::Uuid::from_bytes([index as u8 + 1; 16]),
                    unique_guid: uuid::Uuid::from_bytes([index as u8 + 9; 16]),
                    first_lba: 2048 + index as u64 * 1024,
                    last_lba: 3071 + index as u64 * 1024,
                    attributes: 1 << 60,
                    name: (*name).into(),
                })
                .collect(),
        };
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(8192 * 512).unwrap();
        table.write(file.as_file_mut()).unwrap();
        (file, table)
    }

    #[test]
    fn slot_states_written_to_the_disk_read_back_with_the_other_bits_kept() {
        let (mut file, mut table) = disk_with_roots(&["root-a", "root-b"]);
        let a = SlotState::fresh(2, 3).confirmed();
        let b = SlotState::fresh(3, 2);
        write_slot_states(
            &mut table,
            file.as_file_mut(),
            &[(Slot::A, a), (Slot::B, b)],
        )
        .unwrap();
        let read = Table::read(file.as_file_mut()).unwrap();
        assert_eq!(read_slot_state(&read, Slot::A).unwrap(), a);
        assert_eq!(read_slot_state(&read, Slot::B).unwrap(), b);
        assert!(
            read.partitions
                .iter()
                .all(|entry| entry.attributes & (1 << 60) != 0)
        );
    }

    #[test]
    fn a_disk_without_a_slot_is_an_error_and_is_left_unchanged() {
        let (mut file, mut table) = disk_with_roots(&["root-a"]);
        let before = std::fs::read(file.path()).unwrap();
        assert!(matches!(
            read_slot_state(&table, Slot::B),
            Err(GptError::MissingPartition(name)) if name == "root-b"
        ));
        let states = [
            (Slot::A, SlotState::default()),
            (Slot::B, SlotState::default()),
        ];
        let error = write_slot_states(&mut table, file.as_file_mut(), &states).unwrap_err();
        assert_eq!(error.to_string(), "the disk has no root-b partition");
        assert_eq!(std::fs::read(file.path()).unwrap(), before);
    }

    #[test]
    fn a_confirmed_slot_keeps_booting_and_an_abandoned_one_never_does() {
        let a = SlotState::fresh(2, 1).spend_try().confirmed();
        assert_eq!(a.spend_try(), a);
        assert_eq!(boot_order(a, a.abandoned()), vec![Slot::A]);
        assert!(boot_order(a.abandoned(), a.abandoned()).is_empty());
    }
}
