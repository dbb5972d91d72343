//! Host uid ranges of warm pools, allocated so that no two pools of the
//! process ever share a uid (a shared uid would make one pool's "no
//! process left behind" check see the other's processes).

use std::sync::Mutex;

use crate::error::{Error, Result};

/// First host uid handed to pools.
pub const DEFAULT_POOL_UID_BASE: u32 = 200_000;

static TAKEN: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// A range of host uids held by one pool; released when dropped.
#[derive(Debug)]
pub(crate) struct UidRange {
    start: u32,
    len: u32,
}

impl UidRange {
    /// Reserves `len` uids: at `start` if given (an error when any of them
    /// is taken), else the lowest free range from
    /// [`DEFAULT_POOL_UID_BASE`].
    pub(crate) fn reserve(start: Option<u32>, len: u32) -> Result<Self> {
        let len = len.max(1);
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let start = match start {
            Some(s) => {
                if s.checked_add(len).is_none() || s < 1000 {
                    return Err(Error::UidRangeUnavailable(format!(
                        "{s}..+{len} is outside the usable uid space"
                    )));
                }
                if let Some(t) = taken.iter().find(|t| overlaps(**t, (s, len))) {
                    return Err(Error::UidRangeUnavailable(format!(
                        "{s}..+{len} overlaps the pool range {}..+{}",
                        t.0, t.1
                    )));
                }
                s
            }
            None => {
                let mut candidate = DEFAULT_POOL_UID_BASE;
                while let Some(t) = taken.iter().find(|t| overlaps(**t, (candidate, len))) {
                    candidate = t
                        .0
                        .checked_add(t.1)
                        .ok_or_else(|| Error::UidRangeUnavailable("host uids exhausted".into()))?;
                }
                if candidate.checked_add(len).is_none() {
                    return Err(Error::UidRangeUnavailable("host uids exhausted".into()));
                }
                candidate
            }
        };
        taken.push((start, len));
        Ok(Self { start, len })
    }

    /// The `i`-th uid of the range.
    pub(crate) fn uid(&self, i: u32) -> Option<u32> {
        (i < self.len).then(|| self.start + i)
    }

    /// Whether `uid` falls in a range some pool holds.
    pub(crate) fn is_taken(uid: u32) -> bool {
        TAKEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|t| overlaps(*t, (uid, 1)))
    }
}

impl Drop for UidRange {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = taken.iter().position(|t| *t == (self.start, self.len)) {
            taken.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_overlap() {
        let a = UidRange::reserve(None, 8).unwrap();
        let b = UidRange::reserve(None, 8).unwrap();
        let (a0, b0) = (a.uid(0).unwrap(), b.uid(0).unwrap());
        assert!(a0 + 8 <= b0 || b0 + 8 <= a0);
        assert!(matches!(
            UidRange::reserve(Some(a0 + 3), 2),
            Err(Error::UidRangeUnavailable(_))
        ));
        assert!(a.uid(8).is_none());
        drop(a);
        let c = UidRange::reserve(Some(a0), 8).unwrap();
        assert_eq!(c.uid(0), Some(a0));
    }
}
