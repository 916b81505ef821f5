//! What a client's (a module's or a leaf device's) MQTT session keeps: its subscriptions (in the store when
//! `clean_session = 0`, so they survive a restart), the packet ids of the
//! hub's unacknowledged publishes, and — in memory, across the connections
//! of one client id — which input deliveries were sent but not acknowledged,
//! so that their redelivery carries the DUP flag and the original packet id
//! as MQTT 3.1.1 asks ([MQTT-4.4.0-1]).
//!
//! Undelivered input messages themselves live in the store, not here: the
//! hub's input stream starts again at the head of the module's queues on
//! every connection, so what was sent and not acknowledged comes again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::mqttbytes::QoS;
use tokio::sync::{OwnedMutexGuard, watch};

use crate::hub::StoredSession;
use crate::topic::{Subscription, TopicOwner};

/// A session's subscriptions and the QoS granted to each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriptions {
    granted: BTreeMap<Subscription, QoS>,
}

impl Subscriptions {
    /// The subscriptions a stored session holds for `owner`; filters that
    /// no longer parse (another client's, from an older version) are left
    /// out.
    pub fn from_stored(stored: &StoredSession, owner: TopicOwner<'_>) -> Self {
        let granted = stored
            .subscriptions
            .iter()
            .filter_map(|(filter, qos)| {
                let subscription = Subscription::parse(filter, owner).ok()?;
                Some((subscription, granted_qos(*qos)))
            })
            .collect();
        Self { granted }
    }

    /// The session to store.
    pub fn to_stored(&self, owner: TopicOwner<'_>) -> StoredSession {
        StoredSession {
            subscriptions: self
                .granted
                .iter()
                .map(|(subscription, qos)| (subscription.filter(owner), *qos as u8))
                .collect(),
        }
    }

    /// Adds or replaces a subscription.
    pub fn insert(&mut self, subscription: Subscription, qos: QoS) {
        self.granted.insert(subscription, qos);
    }

    /// Removes a subscription; true if it was there.
    pub fn remove(&mut self, subscription: Subscription) -> bool {
        self.granted.remove(&subscription).is_some()
    }

    /// The QoS granted to a subscription, if the module holds it.
    pub fn get(&self, subscription: Subscription) -> Option<QoS> {
        self.granted.get(&subscription).copied()
    }
}

/// The QoS the hub grants for a requested one: QoS 2 is not supported, as on
/// IoT Hub, so it is granted as 1.
pub fn granted_qos(requested: u8) -> QoS {
    if requested == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// The hub's QoS 1 publishes to a module that await its PUBACK, by packet
/// id.
#[derive(Debug)]
pub struct Outbox<T> {
    next: u16,
    inflight: HashMap<u16, T>,
    reserved: HashSet<u16>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self {
            next: 1,
            inflight: HashMap::new(),
            reserved: HashSet::new(),
        }
    }
}

impl<T> Outbox<T> {
    /// An outbox that will not hand out `reserved` ids (those of the previous
    /// connection's unacknowledged publishes, which are resent with them).
    pub fn with_reserved(reserved: impl IntoIterator<Item = u16>) -> Self {
        Self {
            reserved: reserved.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Records `item` under a fresh packet id, or None when all 65,535 are
    /// in use (the connection bounds what is in flight far below that).
    pub fn insert(&mut self, item: T) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next;
            self.next = self.next.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) && !self.reserved.contains(&id) {
                self.inflight.insert(id, item);
                return Some(id);
            }
        }
        None
    }

    /// Records `item` under the reserved id `id`, if it is still reserved
    /// and free.
    pub fn insert_reserved(&mut self, id: u16, item: T) -> Result<(), T> {
        if self.reserved.remove(&id) && !self.inflight.contains_key(&id) {
            self.inflight.insert(id, item);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// The item the module acknowledged with `id`.
    pub fn complete(&mut self, id: u16) -> Option<T> {
        self.inflight.remove(&id)
    }

    /// How many publishes await a PUBACK.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// True when nothing awaits a PUBACK.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// What awaits a PUBACK, with the packet ids.
    pub fn into_inflight(self) -> impl Iterator<Item = (u16, T)> {
        self.inflight.into_iter()
    }
}

/// What one connection of a client id leaves to the next: the input
/// deliveries it sent and that were not acknowledged, with their packet ids.
#[derive(Debug)]
pub struct Carryover<K> {
    /// Delivery → packet id.
    pub unacknowledged: HashMap<K, u16>,
}

impl<K> Default for Carryover<K> {
    fn default() -> Self {
        Self {
            unacknowledged: HashMap::new(),
        }
    }
}

/// The connections of the hub by client id: at most one per client id is
/// served; a new one takes over from the old one, which is closed first.
pub struct Clients<K> {
    slots: Mutex<HashMap<String, Arc<Slot<K>>>>,
}

impl<K> Default for Clients<K> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

struct Slot<K> {
    /// Held by the connection being served; what it leaves behind is inside.
    owner: Arc<tokio::sync::Mutex<Carryover<K>>>,
    /// Bumped by every new connection; the one being served closes when the
    /// value is no longer its own.
    generation: watch::Sender<u64>,
}

/// A connection's claim on its client id.
pub struct Claim<K> {
    /// What the previous connection left; the connection puts what it leaves
    /// back here before it drops the claim.
    pub carryover: OwnedMutexGuard<Carryover<K>>,
    /// Tells when a newer connection wants the client id.
    pub replacement: Replacement,
}

/// Watches for a newer connection of the same client id.
pub struct Replacement {
    generation: u64,
    changes: watch::Receiver<u64>,
}

impl<K: Eq + Hash> Clients<K> {
    /// Takes `client_id` over: tells the connection serving it (if any) to
    /// close, and waits until it has.
    pub async fn claim(&self, client_id: &str) -> Claim<K> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            // Entries stay: client ids are authenticated module and leaf
            // device identities, so there are at most as many as modules
            // deployed and leaf devices configured.
            Arc::clone(slots.entry(client_id.to_owned()).or_insert_with(|| {
                Arc::new(Slot {
                    owner: Arc::new(tokio::sync::Mutex::new(Carryover::default())),
                    generation: watch::Sender::new(0),
                })
            }))
        };
        let mut generation = 0;
        slot.generation.send_modify(|value| {
            *value = value.wrapping_add(1);
            generation = *value;
        });
        let changes = slot.generation.subscribe();
        let carryover = Arc::clone(&slot.owner).lock_owned().await;
        Claim {
            carryover,
            replacement: Replacement {
                generation,
                changes,
            },
        }
    }
}

impl Replacement {
    /// Resolves when a newer connection of the same client id wants to take
    /// over.
    pub async fn replaced(&mut self) {
        loop {
            if *self.changes.borrow_and_update() != self.generation {
                return;
            }
            if self.changes.changed().await.is_err() {
                // The slot is never dropped while a claim exists; should it
                // be, nothing can replace this connection any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn subscriptions_round_trip_through_the_store() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.insert(Subscription::Inputs, QoS::AtLeastOnce);
        subscriptions.insert(Subscription::DesiredPatches, QoS::AtMostOnce);
        let module = TopicOwner::Module {
            device: "d",
            module: "m",
        };
        let stored = subscriptions.to_stored(module);
        assert_eq!(
            stored.subscriptions,
            vec![
                ("devices/d/modules/m/inputs/#".to_owned(), 1),
                ("$iothub/twin/PATCH/properties/desired/#".to_owned(), 0)
            ]
        );
        assert_eq!(Subscriptions::from_stored(&stored, module), subscriptions);
        // Another module's or a leaf device's stored filters are not taken
        // over.
        for other in [
            TopicOwner::Module {
                device: "d",
                module: "other",
            },
            TopicOwner::LeafDevice { device: "d" },
        ] {
            assert_eq!(
                Subscriptions::from_stored(&stored, other).get(Subscription::Inputs),
                None
            );
        }
        assert!(subscriptions.remove(Subscription::Inputs));
        assert!(!subscriptions.remove(Subscription::Inputs));
    }

    #[test]
    fn outbox_ids_skip_those_in_use_and_reserved() {
        let mut outbox = Outbox::with_reserved([2]);
        assert_eq!(outbox.insert('a'), Some(1));
        assert_eq!(outbox.insert('b'), Some(3));
        assert_eq!(outbox.insert_reserved(2, 'c'), Ok(()));
        assert_eq!(outbox.insert_reserved(2, 'd'), Err('d'));
        assert_eq!(outbox.complete(1), Some('a'));
        assert_eq!(outbox.complete(1), None);
        assert_eq!(outbox.len(), 2);
        outbox.next = u16::MAX;
        assert_eq!(outbox.insert('e'), Some(u16::MAX));
        // Wraps to 1, which is free again, skipping 0.
        assert_eq!(outbox.insert('f'), Some(1));
    }

    #[tokio::test]
    async fn a_new_claim_replaces_the_old_one() {
        let clients = Arc::new(Clients::<u32>::default());
        let mut first = clients.claim("d/m").await;
        first.carryover.unacknowledged.insert(7, 1);
        let second = tokio::spawn({
            let clients = Arc::clone(&clients);
            async move { clients.claim("d/m").await }
        });
        tokio::time::timeout(Duration::from_secs(5), first.replacement.replaced())
            .await
            .expect("the first claim is told to go");
        assert!(!second.is_finished());
        drop(first);
        let mut second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second claim follows")
            .expect("no panic");
        assert_eq!(second.carryover.unacknowledged.get(&7), Some(&1));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.replacement.replaced())
                .await
                .is_err()
        );
    }
}
