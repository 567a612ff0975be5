//! A first-in first-out queue kept in chunks of at most `CHUNK` entries, each behind an `Arc`: a
//! copy of the whole (a snapshot's) costs a reference count per chunk, not an entry each, and a
//! change to a chunk the copy still shares copies that chunk alone. Pushes go to the last chunk,
//! pops come off the first. Encoded as one sequence, as a `VecDeque<T>` is.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

const CHUNK: usize = 4_096;

#[derive(Clone, Debug)]
pub(crate) struct ChunkedQueue<T> {
    chunks: VecDeque<Arc<VecDeque<T>>>,
    len: usize,
}

impl<T> Default for ChunkedQueue<T> {
    fn default() -> Self {
        ChunkedQueue {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T: Clone> ChunkedQueue<T> {
    pub fn push_back(&mut self, value: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push_back(value),
            _ => {
                let mut chunk =
                    VecDeque::with_capacity(if self.chunks.is_empty() { 16 } else { CHUNK });
                chunk.push_back(value);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front()?.front()
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let value = if first.len() == 1 {
            // The chunk goes with its last entry: taken out whole, copied only if shared.
            let chunk = self.chunks.pop_front().expect("just seen");
            Arc::unwrap_or_clone(chunk).pop_front()
        } else {
            Arc::make_mut(first).pop_front()
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries the chunks have room for.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity()).sum()
    }

    #[cfg(test)]
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

impl<T: Serialize> Serialize for ChunkedQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for value in self.chunks.iter().flat_map(|c| c.iter()) {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Values<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for Values<T> {
            type Value = ChunkedQueue<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut queue = ChunkedQueue::default();
                while let Some(value) = seq.next_element()? {
                    queue.push_back(value);
                }
                Ok(queue)
            }
        }
        deserializer.deserialize_seq(Values(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_encoded_as_a_plain_deque_and_copies_share_chunks() {
        let mut q = ChunkedQueue::default();
        let mut plain = VecDeque::new();
        for i in 0..(CHUNK as u64 * 3 + 5) {
            q.push_back(i);
            plain.push_back(i);
        }
        for _ in 0..(CHUNK + 2) {
            assert_eq!(q.pop_front(), plain.pop_front());
        }
        assert_eq!(q.len(), plain.len());
        let bytes = postcard::to_allocvec(&q).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
        let back: ChunkedQueue<u64> = postcard::from_bytes(&bytes).unwrap();
        assert!(back.iter().eq(plain.iter()));

        let copy = q.clone();
        q.push_back(u64::MAX);
        while q.len() > 1 {
            q.pop_front();
        }
        assert_eq!(q.front(), Some(&u64::MAX));
        assert!(copy.iter().eq(plain.iter()), "the copy changed");
        // The pops copied the chunks they changed and let go of the rest: none is shared now.
        assert_eq!(
            copy.chunks
                .iter()
                .filter(|c| Arc::strong_count(c) > 1)
                .count(),
            0
        );
        q.clear();
        assert_eq!((q.len(), q.pop_front()), (0, None));
    }
}
