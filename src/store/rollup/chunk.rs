//! A chunk part's layout. Rows are grouped by their lead value (the tuple's
//! first: genre for dims, title for titles, track for music), the leads sorted,
//! each group with its total. A question about one title finds its group by a
//! binary search over a fixed-width table and reads its total alone; a
//! breakdown by title reads one total per title, not its rows.
//!
//! Beside the groups, a part holds the totals of each value of the other
//! positions (facets: a region, a resolution, a device), so a question with
//! one filter on such a value — the series of a region — reads one total per
//! part instead of its rows.
//!
//! ```text
//! n: u32 | facets offset u32 | facets len u32
//!        | n × (lead offset u32, lead len u32, body offset u32, body len u32)
//!        | leads (bytes) | bodies | facets
//! body: postcard (total: Sums, rows: Vec<([&str; 3], Sums)>)
//! facets: postcard Vec<(position: u8, Vec<(value: &str, Sums)>)>, values sorted
//! ```
//!
//! Parts whose key's part number has [`GROUPED`] set are in this layout; parts
//! written before it (a postcard `Vec<(Tuple, Sums)>`) still read.

use super::*;

/// The part-number bit of parts in the grouped layout.
pub const GROUPED: u32 = 1 << 31;

/// Rows of one group per body at most: a lead with more rows (a genre of a
/// dims chunk with many regions) takes several groups, each with its total.
const GROUP_ROWS: usize = 1024;

const ENTRY: usize = 16;
const HEAD: usize = 12;

/// The totals of each value of the non-lead positions.
type Facets<'a> = Vec<(u8, Vec<(&'a str, Sums)>)>;

/// The most bytes of a part (a lone group may pass it). sled splits a leaf
/// past 16 entries and writes a leaf larger than 128 KiB (a quarter of its
/// 512 KiB segment) as a blob file of its own, created, synced and later
/// deleted: parts of 7 KiB keep the rollups' leaves under that.
pub const PART_BYTES: usize = 7 << 10;

/// A bucket's rows (sorted by tuple) as grouped parts, each under
/// [`PART_BYTES`]; the part numbers carry [`GROUPED`].
/// `facets`: also the totals per value of the other positions.
pub fn encode(rows: &[(Tuple<&str>, Sums)], facets: bool) -> Vec<(u32, Vec<u8>)> {
    let limit = PART_BYTES;
    let mut parts = Vec::new();
    // The groups of the part being filled (lead, body length), their bodies
    // end to end, and where its rows start (for its facets).
    let mut groups: Vec<(&str, usize)> = Vec::new();
    let mut bodies: Vec<u8> = Vec::with_capacity(limit);
    let mut from = 0;
    let mut size = HEAD;
    let mut i = 0;
    while i < rows.len() {
        let lead = rows[i].0[0];
        let mut j = i;
        let mut total = Sums::default();
        while j < rows.len() && rows[j].0[0] == lead && j - i < GROUP_ROWS {
            total.add(&rows[j].1);
            j += 1;
        }
        let start = bodies.len();
        write_body(&mut bodies, &total, &rows[i..j]);
        let body = bodies.len() - start;
        // Room for the facets: at most one entry per row.
        let n = ENTRY + lead.len() + body + if facets { body } else { 0 };
        if !groups.is_empty() && size + n > limit {
            parts.push(finish(
                &groups,
                &bodies[..start],
                &facets_of(&rows[from..i], facets),
            ));
            groups.clear();
            bodies.drain(..start);
            from = i;
            size = HEAD;
        }
        size += n;
        groups.push((lead, body));
        i = j;
    }
    if !groups.is_empty() {
        parts.push(finish(&groups, &bodies, &facets_of(&rows[from..], facets)));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(p, v)| (p as u32 | GROUPED, v))
        .collect()
}

/// Appends a group's body as postcard writes `(total, rows)` with each row
/// `([&str; 3], Sums)`: its values past the lead (what [`Grouped::rows`]
/// reads), without a list of them built first.
fn write_body(out: &mut Vec<u8>, total: &Sums, rows: &[(Tuple<&str>, Sums)]) {
    total.write(out);
    put_varint(out, rows.len() as u64);
    for (t, s) in rows {
        for v in &t[1..] {
            put_str(out, v);
        }
        s.write(out);
    }
}

/// The totals of each non-empty value at positions 1..=3 of `rows`.
fn facets_of<'a>(rows: &[(Tuple<&'a str>, Sums)], on: bool) -> Facets<'a> {
    if !on {
        return Vec::new();
    }
    (1..4u8)
        .filter_map(|p| {
            let mut m: std::collections::BTreeMap<&str, Sums> = std::collections::BTreeMap::new();
            for (t, s) in rows {
                let v = t[usize::from(p)];
                if !v.is_empty() {
                    m.entry(v).or_default().add(s);
                }
            }
            (!m.is_empty()).then(|| (p, m.into_iter().collect()))
        })
        .collect()
}

/// A part: its table, the groups' leads, their bodies (`bodies`, end to
/// end in the order of `groups`, each of the length it names), the facets.
fn finish(groups: &[(&str, usize)], bodies: &[u8], facets: &Facets) -> Vec<u8> {
    let table = HEAD + groups.len() * ENTRY;
    let leads: usize = groups.iter().map(|(l, _)| l.len()).sum();
    let facets = postcard::to_stdvec(facets).unwrap_or_default();
    let mut v = Vec::with_capacity(table + leads + bodies.len() + facets.len());
    v.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    v.extend_from_slice(&((table + leads + bodies.len()) as u32).to_le_bytes());
    v.extend_from_slice(&(facets.len() as u32).to_le_bytes());
    let (mut lead_at, mut body_at) = (table, table + leads);
    for (l, b) in groups {
        for x in [lead_at, l.len(), body_at, *b] {
            v.extend_from_slice(&(x as u32).to_le_bytes());
        }
        lead_at += l.len();
        body_at += b;
    }
    for (l, _) in groups {
        v.extend_from_slice(l.as_bytes());
    }
    v.extend_from_slice(bodies);
    v.extend_from_slice(&facets);
    v
}

/// A grouped part, read in place.
pub struct Grouped<'a> {
    bytes: &'a [u8],
    n: usize,
    /// The leads, checked as text once, and where they start in `bytes`.
    leads: &'a str,
    leads_at: usize,
}

impl<'a> Grouped<'a> {
    /// `None`: not a grouped part, or damaged (a table pointing outside it).
    pub fn parse(bytes: &'a [u8]) -> Option<Grouped<'a>> {
        let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let table = n.checked_mul(ENTRY)?.checked_add(HEAD)?;
        if table > bytes.len() {
            return None;
        }
        let mut g = Grouped {
            bytes,
            n,
            leads: "",
            leads_at: table,
        };
        // The leads lie end to end after the table (see [`finish`]): one
        // check of them as text, then each lead is a slice of it.
        let mut end = table;
        for i in 0..n {
            let (at, len) = (g.field(i, 0), g.field(i, 1));
            if at != end {
                return None;
            }
            end = at.checked_add(len)?;
            g.body(i)?;
        }
        g.leads = std::str::from_utf8(bytes.get(table..end)?).ok()?;
        for i in 0..n {
            g.lead(i)?;
        }
        g.facet_bytes()?;
        Some(g)
    }

    fn facet_bytes(&self) -> Option<&'a [u8]> {
        let word = |at: usize| {
            self.bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(|b| u32::from_le_bytes(b) as usize)
        };
        let (at, len) = (word(4)?, word(8)?);
        self.bytes.get(at..at.checked_add(len)?)
    }

    /// The totals of each value at `position` (1..=3) of the part's rows;
    /// `None` when the part holds none (titles parts keep no facets).
    pub fn facet(&self, position: usize) -> Option<Vec<(&'a str, Sums)>> {
        let all: Facets<'a> = postcard::from_bytes(self.facet_bytes()?).ok()?;
        all.into_iter()
            .find(|(p, _)| usize::from(*p) == position)
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn field(&self, i: usize, k: usize) -> usize {
        let at = HEAD + i * ENTRY + k * 4;
        self.bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(usize::MAX, |b| u32::from_le_bytes(b) as usize)
    }

    fn slice(&self, i: usize, k: usize) -> Option<&'a [u8]> {
        let (at, len) = (self.field(i, k), self.field(i, k + 1));
        self.bytes.get(at..at.checked_add(len)?)
    }

    /// Group `i`'s lead value.
    pub fn lead(&self, i: usize) -> Option<&'a str> {
        let at = self.field(i, 0).checked_sub(self.leads_at)?;
        self.leads.get(at..at.checked_add(self.field(i, 1))?)
    }

    fn body(&self, i: usize) -> Option<&'a [u8]> {
        self.slice(i, 2)
    }

    /// The groups whose lead is `lead` (sorted leads: a binary search).
    pub fn find(&self, lead: &str) -> std::ops::Range<usize> {
        let key = |i: usize| self.lead(i).unwrap_or("");
        let lo = partition(self.n, |i| key(i) < lead);
        let hi = lo + partition(self.n - lo, |i| key(lo + i) <= lead);
        lo..hi
    }

    /// Group `i`'s total.
    pub fn total(&self, i: usize) -> Option<Sums> {
        Sums::read(self.body(i)?).map(|(s, _)| s)
    }

    /// Group `i`'s rows, their other values borrowed from the part.
    pub fn rows(&self, i: usize) -> Option<Vec<([&'a str; 3], Sums)>> {
        let (_, rest) = postcard::take_from_bytes::<Sums>(self.body(i)?).ok()?;
        postcard::from_bytes(rest).ok()
    }
}

/// The first of `0..n` where `pred` stops holding (it holds on a prefix).
fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether the chunk key `k` names a grouped part.
pub fn is_grouped(k: &[u8]) -> bool {
    k.len() >= 4
        && u32::from_be_bytes(k[k.len() - 4..].try_into().unwrap_or_default()) & GROUPED != 0
}

/// A part's rows in either layout (`None`: unreadable).
pub fn all_rows<'a>(k: &[u8], v: &'a [u8]) -> Option<Rows<'a>> {
    if !is_grouped(k) {
        return decode_rows(v);
    }
    let g = Grouped::parse(v)?;
    let mut out = Vec::new();
    for i in 0..g.len() {
        let lead = g.lead(i)?;
        for (r, s) in g.rows(i)? {
            out.push(([lead, r[0], r[1], r[2]], s));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_body_is_written_as_postcard_writes_its_total_and_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // Empty values, multi-byte text, and lengths past one varint byte.
        let words = [
            "",
            "US",
            "1080p",
            "Drame étranger",
            &"x".repeat(200),
            "日本",
        ];
        for n in [0usize, 1, 3, 40, 300] {
            let rows: Vec<(Tuple<&str>, Sums)> = (0..n)
                .map(|_| {
                    let mut s = Sums::default();
                    for v in s.0.iter_mut() {
                        *v = rng.gen::<u64>() >> rng.gen_range(0..64);
                    }
                    let mut w = || words[rng.gen_range(0..words.len())];
                    let t = ["lead", w(), w(), w()];
                    (t, s)
                })
                .collect();
            let mut total = Sums::default();
            for (_, s) in &rows {
                total.add(s);
            }
            let rest: Vec<([&str; 3], Sums)> =
                rows.iter().map(|(t, s)| ([t[1], t[2], t[3]], *s)).collect();
            let mut written = b"before".to_vec();
            write_body(&mut written, &total, &rows);
            let mut want = b"before".to_vec();
            want.extend(postcard::to_stdvec(&(total, rest)).unwrap());
            assert_eq!(written, want, "{n} rows");
        }
    }
}
