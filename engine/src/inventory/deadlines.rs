//! Ids by deadline (ms), earliest first: the holds by expiry and the orders by payment deadline.
//! Ids sharing a millisecond share a list, and a push goes mostly onto the last list.
//!
//! The lists are grouped by second (`BUCKET_BITS`) into tables behind an `Arc`, so a copy of the
//! whole (a snapshot's) costs a reference count per second of deadlines, not an id each; the first
//! change to a second's table that the copy still shares copies that second alone. Encoded as one
//! map from deadline to list, as a `BTreeMap<u64, Vec<T>>` is.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Deadlines within 2^10 ms (about a second) share a table.
const BUCKET_BITS: u32 = 10;

type Bucket<T> = Arc<BTreeMap<u64, Vec<T>>>;

#[derive(Clone, Debug)]
pub(crate) struct Deadlines<T> {
    buckets: BTreeMap<u64, Bucket<T>>,
    /// Lists in all buckets.
    lists: usize,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            buckets: BTreeMap::new(),
            lists: 0,
        }
    }
}

impl<T: Copy> Deadlines<T> {
    /// Adds `id` to the list of deadline `at`.
    pub fn push(&mut self, at: u64, id: T) {
        let bucket = Arc::make_mut(self.buckets.entry(at >> BUCKET_BITS).or_default());
        match bucket.last_entry() {
            Some(mut last) if *last.key() == at => last.get_mut().push(id),
            _ => {
                let list = bucket.entry(at).or_default();
                if list.is_empty() {
                    self.lists += 1;
                }
                list.push(id);
            }
        }
    }

    /// The earliest deadline and the id last added to its list.
    pub fn first(&self) -> Option<(u64, T)> {
        let (at, list) = self.buckets.first_key_value()?.1.first_key_value()?;
        Some((*at, *list.last()?))
    }

    /// Takes the id `first` shows off its list, and the list once empty.
    pub fn pop_first(&mut self) -> Option<(u64, T)> {
        let mut bucket = self.buckets.first_entry()?;
        let table = Arc::make_mut(bucket.get_mut());
        let mut list = table.first_entry()?;
        let at = *list.key();
        let id = list.get_mut().pop();
        if list.get().is_empty() {
            list.remove();
            self.lists -= 1;
            if table.is_empty() {
                bucket.remove();
            }
        }
        Some((at, id?))
    }

    /// Every deadline and its list, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Vec<T>)> {
        self.buckets.values().flat_map(|b| b.iter())
    }

    /// Whether some deadline has an empty list (only a decoded snapshot can have one).
    pub fn has_empty_list(&self) -> bool {
        self.iter().any(|(_, ids)| ids.is_empty())
    }
}

impl<T: Serialize> Serialize for Deadlines<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.lists))?;
        for (at, ids) in self.buckets.values().flat_map(|b| b.iter()) {
            map.serialize_entry(at, ids)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for Deadlines<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Lists<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for Lists<T> {
            type Value = Deadlines<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from deadline to ids")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut deadlines = Deadlines::default();
                while let Some((at, ids)) = map.next_entry::<u64, Vec<T>>()? {
                    let bucket =
                        Arc::make_mut(deadlines.buckets.entry(at >> BUCKET_BITS).or_default());
                    // A repeated key replaces its list, as decoding a `BTreeMap` does.
                    if bucket.insert(at, ids).is_none() {
                        deadlines.lists += 1;
                    }
                }
                Ok(deadlines)
            }
        }
        deserializer.deserialize_map(Lists(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_last_added_on_top_and_encoded_as_a_plain_map() {
        let mut d = Deadlines::default();
        let mut plain: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        // Deadlines over several seconds, mostly in order, some out of order.
        for i in 0..10_000u32 {
            let at = 1_000_000 + u64::from(i) * 3 - if i % 7 == 0 { 2_500 } else { 0 };
            d.push(at, i);
            plain.entry(at).or_default().push(i);
        }
        assert_eq!(
            postcard::to_allocvec(&d).unwrap(),
            postcard::to_allocvec(&plain).unwrap()
        );
        let back: Deadlines<u32> =
            postcard::from_bytes(&postcard::to_allocvec(&plain).unwrap()).unwrap();
        assert_eq!(back.lists, plain.len());
        // A copy keeps what it saw while the original is drained.
        let copy = d.clone();
        let mut drained = Vec::new();
        while let Some((at, id)) = d.first() {
            assert_eq!(d.pop_first(), Some((at, id)));
            drained.push((at, id));
        }
        let mut expected = Vec::new();
        for (at, ids) in &plain {
            expected.extend(ids.iter().rev().map(|id| (*at, *id)));
        }
        assert_eq!(drained, expected);
        assert_eq!((d.lists, d.buckets.len()), (0, 0));
        assert_eq!(
            postcard::to_allocvec(&copy).unwrap(),
            postcard::to_allocvec(&plain).unwrap()
        );
    }

    #[test]
    fn a_change_copies_only_the_second_it_touches() {
        let mut d = Deadlines::default();
        for s in 0..10u64 {
            for i in 0..100u32 {
                d.push(s << BUCKET_BITS, i);
            }
        }
        let copy = d.clone();
        d.push(3 << BUCKET_BITS, 100);
        let shared = d
            .buckets
            .values()
            .zip(copy.buckets.values())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 9);
        assert_eq!(copy.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 1_000);
    }
}
