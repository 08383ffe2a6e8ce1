//! Train/test interaction files as `../shared/peers/split.py` writes them: tab
//! separated with a header, `user item weight events positive`, integer ids.

use std::io::BufRead;
use std::path::Path;

use thiserror::Error;

use super::sparse::Csr;

#[derive(Debug, Error)]
pub enum SplitError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
}

/// Each data line of a tab-separated file whose header names `columns`:
/// `row` gets those fields (trimmed, in `columns` order) and a maker of errors
/// naming the line. Blank lines are skipped.
fn read_rows<const N: usize>(
    path: &Path,
    columns: [&str; N],
    mut row: impl FnMut([&str; N], &dyn Fn(String) -> SplitError) -> Result<(), SplitError>,
) -> Result<(), SplitError> {
    let name = path.display().to_string();
    let io = |source| SplitError::Io {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut cols = [usize::MAX; N];
    for (n, line) in std::io::BufReader::with_capacity(1 << 20, file)
        .lines()
        .enumerate()
    {
        let line = line.map_err(io)?;
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let err = |message: String| SplitError::Format {
            path: name.clone(),
            line: n + 1,
            message,
        };
        if n == 0 {
            for (col, c) in cols.iter_mut().zip(columns) {
                *col = fields.iter().position(|f| *f == c).ok_or_else(|| {
                    err(format!(
                        "header lacks the `{c}` column; expected {}",
                        columns.join(", ")
                    ))
                })?;
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut got = [""; N];
        for ((g, &i), what) in got.iter_mut().zip(&cols).zip(columns) {
            *g = fields
                .get(i)
                .ok_or_else(|| err(format!("missing `{what}` field")))?;
        }
        row(got, &err)?;
    }
    Ok(())
}

/// Rows of one file: (user, item, weight).
pub fn read_tsv(path: &Path) -> Result<Vec<(u32, u32, f32)>, SplitError> {
    let mut out = Vec::new();
    read_rows(
        path,
        ["user", "item", "weight"],
        |[user, item, weight], err| {
            let user: u32 = user
                .parse()
                .map_err(|_| err(format!("user {user:?} is not a non-negative integer id")))?;
            let item: u32 = item
                .parse()
                .map_err(|_| err(format!("item {item:?} is not a non-negative integer id")))?;
            let weight: f32 = weight
                .parse()
                .ok()
                .filter(|w: &f32| w.is_finite())
                .ok_or_else(|| err(format!("weight {weight:?} is not a finite number")))?;
            out.push((user, item, weight));
            Ok(())
        },
    )?;
    Ok(out)
}

/// Item genres for the diversity metric: a tab-separated file with a header
/// naming `item` and `genre` columns, integer item ids of the split. Answers
/// one genre number per item of `items` ([`super::metrics::NO_GENRE`] where
/// the file has none) and how many of its rows name an item past them.
pub fn read_genres(path: &Path, items: usize) -> Result<(Vec<u32>, usize), SplitError> {
    let mut ids = vec![super::metrics::NO_GENRE; items];
    let mut names: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut outside = 0;
    read_rows(path, ["item", "genre"], |[item, genre], err| {
        let item: usize = item
            .parse()
            .map_err(|_| err(format!("item {item:?} is not a non-negative integer id")))?;
        if genre.is_empty() || genre.len() > 256 {
            return Err(err(format!(
                "genre {genre:?}: give a name of 1 to 256 bytes"
            )));
        }
        let Some(slot) = ids.get_mut(item) else {
            outside += 1;
            return Ok(());
        };
        let next = names.len() as u32;
        *slot = *names.entry(genre.to_string()).or_insert(next);
        Ok(())
    })?;
    Ok((ids, outside))
}

/// Train weights and test items (value 1) as matrices over the same id space.
pub fn load(train: &Path, test: &Path) -> Result<(Csr, Csr), SplitError> {
    let tr = read_tsv(train)?;
    let te = read_tsv(test)?;
    let users = tr
        .iter()
        .chain(&te)
        .map(|t| t.0 as usize + 1)
        .max()
        .unwrap_or(0);
    let items = tr
        .iter()
        .chain(&te)
        .map(|t| t.1 as usize + 1)
        .max()
        .unwrap_or(0);
    let te: Vec<(u32, u32, f32)> = te.into_iter().map(|(u, i, _)| (u, i, 1.0)).collect();
    Ok((
        Csr::from_triplets(users, items, &tr),
        Csr::from_triplets(users, items, &te),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_item_genres_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("genres.tsv");
        std::fs::write(
            &g,
            "genre\titem\nDrama\t0\nComedy\t2\nDrama\t3\nWestern\t9\n",
        )
        .unwrap();
        let (ids, outside) = read_genres(&g, 4).unwrap();
        use crate::ml::metrics::NO_GENRE;
        assert_eq!((ids, outside), (vec![0, NO_GENRE, 1, 0], 1));
        std::fs::write(&g, "item\tgenre\nx\tDrama\n").unwrap();
        let e = read_genres(&g, 4).unwrap_err().to_string();
        assert!(
            e.ends_with(":2: item \"x\" is not a non-negative integer id"),
            "{e}"
        );
        std::fs::write(&g, "item\tkind\n").unwrap();
        let e = read_genres(&g, 4).unwrap_err().to_string();
        assert!(e.contains("lacks the `genre` column"), "{e}");
    }

    #[test]
    fn reads_the_peers_format_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let tr = dir.path().join("train.tsv");
        let te = dir.path().join("test.tsv");
        std::fs::write(
            &tr,
            "user\titem\tweight\tevents\tpositive\n0\t3\t1.5\t2\t1\n2\t1\t0.25\t1\t0\n",
        )
        .unwrap();
        std::fs::write(
            &te,
            "user\titem\tweight\tevents\tpositive\n0\t1\t0.7\t1\t1\n",
        )
        .unwrap();
        let (train, test) = load(&tr, &te).unwrap();
        assert_eq!(
            (train.rows, train.cols, train.nnz(), test.nnz()),
            (3, 4, 2, 1)
        );
        assert_eq!(train.row(0), (&[3u32][..], &[1.5f32][..]));
        assert_eq!(test.row(0), (&[1u32][..], &[1.0f32][..]));
        std::fs::write(&te, "user\titem\tweight\n0\tx\t1\n").unwrap();
        let e = load(&tr, &te).unwrap_err().to_string();
        assert!(e.contains("test.tsv:2") && e.contains("item \"x\""), "{e}");
    }
}
