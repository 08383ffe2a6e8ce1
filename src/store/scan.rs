//! Prefix scans that step over damage in sled's files. When a page of the
//! tree cannot be read (its checksum fails), sled's iterator returns the same
//! error forever; the keys on other pages are still readable. A scan here
//! reports the damaged stretch once — after which key, and where reading
//! resumed — and goes on from the first readable key past it, found by a
//! binary search over start keys (a start key inside the damaged page fails,
//! one past it reads).

use sled::IVec;

/// A stretch of keys that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The last key read before it (the prefix itself when none was).
    pub after: Vec<u8>,
    /// The first key read after it; `None` when nothing past it could be read.
    pub resumed_at: Option<Vec<u8>>,
    /// sled's error.
    pub error: String,
}

/// One step of a scan: an entry, or a stretch that could not be read.
pub type Step = Result<(IVec, IVec), Unreadable>;

/// What a start key's first step gives.
enum Probe {
    Entry(IVec, IVec),
    End,
    Damaged,
}

fn probe(tree: &sled::Tree, start: &[u8], prefix: &[u8]) -> Probe {
    match tree.range(start.to_vec()..).next() {
        Some(Ok((k, v))) if k.starts_with(prefix) => Probe::Entry(k, v),
        Some(Ok(_)) | None => Probe::End,
        Some(Err(_)) => Probe::Damaged,
    }
}

/// `a + b` over big-endian byte strings of the same length (saturating at all ones).
fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    if carry > 0 {
        return vec![0xff; a.len()];
    }
    out
}

/// `(a + b) / 2` over big-endian byte strings of the same length.
fn midpoint(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut sum = vec![0u8; a.len() + 1];
    let mut carry = 0u16;
    for i in (0..a.len()).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        sum[i + 1] = s as u8;
        carry = s >> 8;
    }
    sum[0] = carry as u8;
    // Halve the (len + 1)-byte sum, keep the low len bytes.
    let mut out = vec![0u8; a.len()];
    let mut rem = 0u16;
    for (i, byte) in sum.iter().enumerate() {
        let cur = (rem << 8) | u16::from(*byte);
        if i > 0 {
            out[i - 1] = (cur >> 1) as u8;
        }
        rem = cur & 1;
    }
    out
}

/// The first readable entry past a damaged stretch that starts after `last`
/// (within `prefix`): `(entry, probes)`, or `None` when nothing is readable past it.
fn resume(tree: &sled::Tree, prefix: &[u8], last: &[u8]) -> Option<(IVec, IVec)> {
    // Start keys as fixed-width numbers: `last` and a zero byte (the least
    // key past `last`) up to the end of the prefix.
    let width = last.len().max(prefix.len()) + 8;
    let mut lo = last.to_vec();
    lo.resize(width, 0);
    lo = add(&lo, &{
        let mut one = vec![0u8; width];
        one[width - 1] = 1;
        one
    });
    let mut hi = vec![0xffu8; width];
    hi[..prefix.len()].copy_from_slice(prefix);
    match probe(tree, &hi, prefix) {
        Probe::Damaged => return None,
        Probe::Entry(..) | Probe::End => {}
    }
    if let Probe::Entry(k, v) = probe(tree, &lo, prefix) {
        return Some((k, v));
    }
    // Invariant: lo is damaged (or ends the prefix), hi reads.
    for _ in 0..(width * 8 + 2) {
        let mid = midpoint(&lo, &hi);
        if mid == lo || mid == hi {
            break;
        }
        match probe(tree, &mid, prefix) {
            Probe::Damaged => lo = mid,
            Probe::Entry(..) | Probe::End => hi = mid,
        }
    }
    match probe(tree, &hi, prefix) {
        Probe::Entry(k, v) => Some((k, v)),
        Probe::End | Probe::Damaged => None,
    }
}

/// Every entry under `prefix`, stepping over stretches that cannot be read.
/// The scan holds `tree`'s generation (see [`super::generation::Held`]).
pub fn scan_prefix<'a>(
    tree: super::generation::Held,
    prefix: &'a [u8],
) -> impl Iterator<Item = Step> + 'a {
    let mut iter = Some(tree.scan_prefix(prefix));
    let mut last: Vec<u8> = prefix.to_vec();
    let mut pending: Option<(IVec, IVec)> = None;
    std::iter::from_fn(move || {
        if let Some(entry) = pending.take() {
            last = entry.0.to_vec();
            return Some(Ok(entry));
        }
        let it = iter.as_mut()?;
        match it.next()? {
            Ok((k, v)) => {
                last = k.to_vec();
                Some(Ok((k, v)))
            }
            Err(e) => {
                let resumed = resume(&tree, prefix, &last);
                let resumed_at = resumed.as_ref().map(|(k, _)| k.to_vec());
                match &resumed {
                    Some((k, _)) => {
                        // Go on from the first readable key; it is handed out next.
                        let mut next_start = k.to_vec();
                        next_start.push(0);
                        iter = Some(tree.range(next_start..));
                        pending = resumed;
                    }
                    None => iter = None,
                }
                Some(Err(Unreadable {
                    after: last.clone(),
                    resumed_at,
                    error: e.to_string(),
                }))
            }
        }
    })
    .take_while(move |step| match step {
        Ok((k, _)) => k.starts_with(prefix),
        Err(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_arithmetic() {
        assert_eq!(add(&[0, 255], &[0, 1]), vec![1, 0]);
        assert_eq!(add(&[255, 255], &[0, 1]), vec![255, 255]);
        assert_eq!(midpoint(&[0, 0], &[0, 10]), vec![0, 5]);
        assert_eq!(midpoint(&[255, 255], &[255, 255]), vec![255, 255]);
        assert_eq!(midpoint(&[1, 0], &[0, 0]), vec![0, 128]);
    }

    #[test]
    fn a_clean_tree_scans_as_sled_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let t = db.open_tree("t").unwrap();
        for i in 0..500u32 {
            t.insert([b"E/".as_ref(), &i.to_be_bytes()].concat(), vec![1u8; 100])
                .unwrap();
            t.insert([b"F/".as_ref(), &i.to_be_bytes()].concat(), vec![2u8; 10])
                .unwrap();
        }
        let got: Vec<_> = scan_prefix(
            crate::store::generation::Held::of(&db, &t, dir.path()),
            b"E/",
        )
        .map(Result::unwrap)
        .collect();
        assert_eq!(got.len(), 500);
        assert!(got.iter().all(|(k, _)| k.starts_with(b"E/")));
    }
}
