//! Replays a file into Kafka: JSON Lines, legacy `"key": value` lines, or CSV
//! with a header row. Each record carries its format and `file:line` origin in
//! headers, so the daemon parses it right and dead-letters point at the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::kafka::{self, KafkaGlueError};

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Csv { path: String, message: String },
    #[error(transparent)]
    Kafka(#[from] KafkaGlueError),
    #[error("unknown format {0:?}: use auto, json, legacy or csv")]
    Format(String),
}

/// File formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Json,
    Legacy,
    Csv,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Legacy => "legacy",
            FileFormat::Csv => "csv",
        }
    }

    /// `auto` picks by extension (`.csv`) or by the first non-empty line (`{` → JSON, else legacy).
    pub fn resolve(name: &str, path: &Path) -> Result<FileFormat, ImportError> {
        match name {
            "json" | "jsonl" => Ok(FileFormat::Json),
            "legacy" => Ok(FileFormat::Legacy),
            "csv" => Ok(FileFormat::Csv),
            "auto" => {
                if path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
                {
                    return Ok(FileFormat::Csv);
                }
                let io = |source| ImportError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let f = File::open(path).map_err(io)?;
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(io)?;
                    let t = line.trim_start();
                    if !t.is_empty() {
                        return Ok(if t.starts_with('{') {
                            FileFormat::Json
                        } else {
                            FileFormat::Legacy
                        });
                    }
                }
                Ok(FileFormat::Json)
            }
            other => Err(ImportError::Format(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub file: String,
    pub format: FileFormat,
    pub records: u64,
    pub bytes: u64,
}

/// Sends every record of `path` to `topic`.
pub fn import_file(
    producer: &crate::kafka::Producer,
    path: &Path,
    topic: &str,
    format: FileFormat,
) -> Result<ImportReport, ImportError> {
    let name = path.display().to_string();
    let io = |source| ImportError::Io {
        path: name.clone(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let pb = crate::domain::progress::bytes_bar(len, "import");
    let file = File::open(path).map_err(io)?;
    let mut records = 0u64;
    match format {
        FileFormat::Json | FileFormat::Legacy => {
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut line = Vec::new();
            let mut line_no = 0u64;
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io)?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                pb.inc(n as u64);
                let body = line.strip_suffix(b"\n").unwrap_or(&line);
                let body = body.strip_suffix(b"\r").unwrap_or(body);
                if body.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let headers =
                    kafka::import_headers(format.as_str(), None, &format!("{name}:{line_no}"));
                kafka::send(
                    producer,
                    topic,
                    format!("{name}:{line_no}").as_bytes(),
                    body,
                    Some(&headers),
                )?;
                records += 1;
            }
        }
        FileFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(pb.wrap_read(file));
            let csv_err = |e: csv::Error| ImportError::Csv {
                path: name.clone(),
                message: e.to_string(),
            };
            let columns = reader
                .headers()
                .map_err(csv_err)?
                .iter()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(",");
            let mut row = csv::ByteRecord::new();
            loop {
                match reader.read_byte_record(&mut row) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(csv_err(e)),
                }
                let line_no = row.position().map(|p| p.line()).unwrap_or(0);
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(Vec::new());
                w.write_byte_record(&row).map_err(csv_err)?;
                let mut payload = w.into_inner().map_err(|e| ImportError::Csv {
                    path: name.clone(),
                    message: e.to_string(),
                })?;
                if payload.last() == Some(&b'\n') {
                    payload.pop();
                }
                let headers =
                    kafka::import_headers("csv", Some(&columns), &format!("{name}:{line_no}"));
                kafka::send(
                    producer,
                    topic,
                    format!("{name}:{line_no}").as_bytes(),
                    &payload,
                    Some(&headers),
                )?;
                records += 1;
            }
        }
    }
    kafka::flush(producer, Duration::from_secs(120))?;
    pb.finish_and_clear();
    Ok(ImportReport {
        file: name,
        format,
        records,
        bytes: len,
    })
}
