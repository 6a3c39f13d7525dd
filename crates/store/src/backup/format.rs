//! The backup file: one zstd stream (with zstd's checksum of its content) of NDJSON lines,
//! documented in docs/backup-format.md:
//!
//! 1. a header: `{"format":"cornershop-backup","formatVersion":1,"createdAt":...,
//!    "source":"sqlite"|"postgresql","position":P,"since":S}`;
//! 2. one line per row, `{"table":"events",<column>:<value>,...}`, the tables in the order
//!    of [`TABLES`], events by position: an event's line holds the seed's envelope fields
//!    (its `data` and `metadata` exactly as stored, byte for byte), its position, trace id
//!    and where it was published;
//! 3. the manifest: `{"manifest":{"position":P,"since":S,"rows":{table: count},
//!    "aggregates":{"Type/id":{"events":n,"lastVersion":v,"sha256":...}},"sha256":...}}`,
//!    where an aggregate's `sha256` runs over its event lines (each step hashes the
//!    previous digest and the line) and the last `sha256` covers every line before the
//!    manifest.
//!
//! A reader checks all of it as it goes ([`BackupReader`]): a flipped byte, a removed or
//! added line, a truncated file, a row of an unknown table or column, an event out of
//! order or above the cut are each refused with what is wrong and on which line.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{table, Cell, Cut, Kind, Row, Table, EVENTS, TABLES};

/// The `format` of a backup's header.
pub const FORMAT: &str = "cornershop-backup";
/// The version of the format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// zstd's level: fast, and about as small as the default on JSON lines.
const LEVEL: i32 = 3;

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupHeader {
    pub format: String,
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    /// The backend the backup was taken from: "sqlite" or "postgresql".
    pub source: String,
    /// The cut: every event at or below it (and above `since`), none above.
    pub position: u64,
    pub since: u64,
}

/// What the manifest says of one aggregate's events in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregateSum {
    pub events: u64,
    pub last_version: u64,
    pub sha256: String,
}

/// The last line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub position: u64,
    pub since: u64,
    /// Rows per table.
    pub rows: BTreeMap<String, u64>,
    /// Per aggregate ("Type/id"): its events, last version and running checksum.
    pub aggregates: BTreeMap<String, AggregateSum>,
    /// Of every line before the manifest (each with its newline).
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLine {
    manifest: Manifest,
}

/// What is wrong with a backup file (or with writing one).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The compressed stream is damaged or cut short (zstd's checksum or framing).
    #[error(
        "the backup is damaged or truncated after line {line}: its compressed data does not \
         decode ({reason})"
    )]
    Damaged { line: u64, reason: String },
    #[error("line {line} of the backup: {reason}")]
    Line { line: u64, reason: String },
    #[error("the backup ends after line {line} without its manifest: it is truncated")]
    NoManifest { line: u64 },
    #[error("the backup does not match its manifest: {0}")]
    Mismatch(String),
}

fn line_error(line: u64, reason: impl Into<String>) -> BackupError {
    BackupError::Line {
        line,
        reason: reason.into(),
    }
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An aggregate's running checksum: each event line hashed with the digest before it.
#[derive(Default)]
struct Running {
    events: u64,
    last_version: u64,
    digest: [u8; 32],
}

impl Running {
    fn add(&mut self, version: u64, line: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.digest);
        hasher.update(line);
        self.digest = hasher.finalize().into();
        self.events += 1;
        self.last_version = version;
    }

    fn sum(&self) -> AggregateSum {
        AggregateSum {
            events: self.events,
            last_version: self.last_version,
            sha256: hex(self.digest),
        }
    }
}

/// What both the writer and the reader keep: the checksums and counts the manifest holds.
#[derive(Default)]
struct Sums {
    file: Sha256,
    rows: BTreeMap<String, u64>,
    aggregates: HashMap<String, Running>,
}

impl Sums {
    fn line(&mut self, line: &[u8]) {
        self.file.update(line);
        self.file.update(b"\n");
    }

    fn row(&mut self, table: &Table, row: &Row, line: &[u8]) {
        *self.rows.entry(table.name.to_string()).or_insert(0) += 1;
        if table.name == EVENTS.name {
            let (key, version) = aggregate_of(row);
            self.aggregates.entry(key).or_default().add(version, line);
        }
    }

    fn manifest(&self, position: u64, since: u64) -> Manifest {
        Manifest {
            position,
            since,
            rows: self.rows.clone(),
            aggregates: self
                .aggregates
                .iter()
                .map(|(key, running)| (key.clone(), running.sum()))
                .collect(),
            sha256: hex(self.file.clone().finalize()),
        }
    }
}

/// The column indexes of an event row the backup format reads.
struct EventColumns {
    position: usize,
    aggregate_type: usize,
    aggregate_id: usize,
    version: usize,
}

fn event_columns() -> EventColumns {
    let at = |name| EVENTS.column(name).expect("an events column");
    EventColumns {
        position: at("position"),
        aggregate_type: at("aggregateType"),
        aggregate_id: at("aggregateId"),
        version: at("version"),
    }
}

fn int(cell: &Cell) -> i64 {
    match cell {
        Cell::Int(i) => *i,
        _ => 0,
    }
}

fn text(cell: &Cell) -> &str {
    match cell {
        Cell::Text(s) => s,
        _ => "",
    }
}

/// An event row's aggregate ("Type/id") and version.
fn aggregate_of(row: &Row) -> (String, u64) {
    let c = event_columns();
    (
        format!(
            "{}/{}",
            text(&row[c.aggregate_type]),
            text(&row[c.aggregate_id])
        ),
        int(&row[c.version]) as u64,
    )
}

/// An event row's position.
pub fn event_position(row: &Row) -> u64 {
    int(&row[event_columns().position]) as u64
}

/// The text of one cell in a backup line.
fn write_cell(out: &mut String, cell: &Cell) -> Result<(), String> {
    match cell {
        Cell::Null => out.push_str("null"),
        Cell::Text(s) | Cell::Uuid(s) => {
            out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?)
        }
        Cell::Int(i) => out.push_str(&i.to_string()),
        Cell::Time(us) => {
            let time = DateTime::from_timestamp_micros(*us)
                .ok_or_else(|| format!("{us} µs is no time"))?;
            out.push('"');
            out.push_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true));
            out.push('"');
        }
        Cell::Json(text) => {
            // Kept exactly as stored; a line break would end the line (our writers store
            // compact JSON, which has none).
            if text.contains(['\n', '\r']) {
                return Err("its JSON holds a line break and cannot be kept byte for byte".into());
            }
            out.push_str(text)
        }
        Cell::Blob(bytes) => {
            out.push('"');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push('"');
        }
    }
    Ok(())
}

/// One row as its line.
fn row_line(table: &Table, row: &Row) -> Result<String, String> {
    let mut line = String::with_capacity(256);
    line.push_str("{\"table\":");
    line.push_str(&serde_json::to_string(table.name).map_err(|e| e.to_string())?);
    for (column, cell) in table.columns.iter().zip(row) {
        line.push_str(",\"");
        line.push_str(column.name);
        line.push_str("\":");
        write_cell(&mut line, cell).map_err(|e| format!("column {}: {e}", column.name))?;
    }
    line.push('}');
    Ok(line)
}

/// Parses one cell of a line.
fn read_cell(kind: Kind, nullable: bool, raw: &RawValue) -> Result<Cell, String> {
    let text = raw.get();
    if text == "null" {
        return if nullable {
            Ok(Cell::Null)
        } else {
            Err("is null, and it may not be".into())
        };
    }
    let string = || serde_json::from_str::<String>(text).map_err(|e| e.to_string());
    Ok(match kind {
        Kind::Text => Cell::Text(string()?),
        Kind::Int => Cell::Int(serde_json::from_str::<i64>(text).map_err(|e| e.to_string())?),
        Kind::Time => {
            let s = string()?;
            let time = DateTime::parse_from_rfc3339(&s)
                .map_err(|e| format!("{s:?} is no RFC 3339 time: {e}"))?;
            Cell::Time(time.with_timezone(&Utc).timestamp_micros())
        }
        Kind::Uuid => {
            let s = string()?;
            uuid::Uuid::parse_str(&s).map_err(|e| format!("{s:?} is no UUID: {e}"))?;
            Cell::Uuid(s)
        }
        Kind::Json => Cell::Json(text.to_string()),
        Kind::Blob => Cell::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(string()?)
                .map_err(|e| format!("is no base64: {e}"))?,
        ),
    })
}

/// Parses a row line.
fn parse_row(text: &str) -> Result<(&'static Table, Row), String> {
    let fields: HashMap<&str, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("is not a JSON object: {e}"))?;
    let name: String = fields
        .get("table")
        .ok_or("names no table")
        .and_then(|raw| serde_json::from_str(raw.get()).map_err(|_| "names no table"))?;
    let table = table(&name).ok_or_else(|| format!("names an unknown table {name:?}"))?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| **k != "table" && table.column(k).is_none())
    {
        return Err(format!("has an unknown column {unknown:?} of {name}"));
    }
    let row = table
        .columns
        .iter()
        .map(|column| {
            let raw = fields
                .get(column.name)
                .ok_or_else(|| format!("lacks column {} of {name}", column.name))?;
            read_cell(column.kind, column.nullable, raw)
                .map_err(|e| format!("column {} of {name} {e}", column.name))
        })
        .collect::<Result<Row, String>>()?;
    Ok((table, row))
}

/// Writes a backup: to `FILE.partial`, renamed to `FILE` once whole and synced, so that
/// a file of that name is always a whole backup.
pub struct BackupWriter {
    path: PathBuf,
    partial: PathBuf,
    out: zstd::Encoder<'static, BufWriter<File>>,
    sums: Sums,
    header: BackupHeader,
    last_position: u64,
}

impl BackupWriter {
    pub fn create(path: &Path, header: BackupHeader) -> Result<Self, BackupError> {
        let partial = path.with_extension("partial");
        let io = |action, source| BackupError::Io {
            action,
            path: partial.clone(),
            source,
        };
        let file = File::create(&partial).map_err(|e| io("create", e))?;
        let mut out =
            zstd::Encoder::new(BufWriter::new(file), LEVEL).map_err(|e| io("write", e))?;
        out.include_checksum(true).map_err(|e| io("write", e))?;
        let mut writer = Self {
            path: path.to_path_buf(),
            partial: partial.clone(),
            out,
            sums: Sums::default(),
            last_position: header.since,
            header,
        };
        let line = serde_json::to_string(&writer.header).expect("a header serializes");
        writer.line(&line)?;
        Ok(writer)
    }

    fn line(&mut self, line: &str) -> Result<(), BackupError> {
        self.sums.line(line.as_bytes());
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| BackupError::Io {
                action: "write",
                path: self.partial.clone(),
                source,
            })
    }

    /// Writes rows of `table`. Events must come in position order, within the cut.
    pub fn rows(&mut self, table: &'static Table, rows: &[Row]) -> Result<(), BackupError> {
        for row in rows {
            let line = row_line(table, row).map_err(BackupError::Mismatch)?;
            if table.name == EVENTS.name {
                let position = event_position(row);
                if position <= self.last_position || position > self.header.position {
                    return Err(BackupError::Mismatch(format!(
                        "the store gave event {position} after {} (cut {})",
                        self.last_position, self.header.position
                    )));
                }
                self.last_position = position;
            }
            self.sums.row(table, row, line.as_bytes());
            self.line(&line)?;
        }
        Ok(())
    }

    /// Writes the manifest, checks the rows written against the cut, and puts the file
    /// in its place.
    pub fn finish(mut self, cut: &Cut) -> Result<Manifest, BackupError> {
        for (table, expected) in &cut.rows {
            let written = self.sums.rows.get(*table).copied().unwrap_or(0);
            if written != *expected {
                return Err(BackupError::Mismatch(format!(
                    "{written} rows of {table} were written, the cut holds {expected}"
                )));
            }
        }
        let manifest = self.sums.manifest(self.header.position, self.header.since);
        let line = serde_json::to_string(&ManifestLine { manifest }).expect("serializes");
        self.line(&line)?;
        let ManifestLine { manifest } = serde_json::from_str(&line).expect("just written");
        let io = |action, source| BackupError::Io {
            action,
            path: self.partial.clone(),
            source,
        };
        let file = self
            .out
            .finish()
            .map_err(|e| io("write", e))?
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| io("rename", e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(manifest)
    }
}

/// A reader that counts the compressed bytes read, for a progress bar.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What a backup holds, item by item.
#[derive(Debug)]
pub enum ReadItem {
    Row(&'static Table, Row),
    /// The last item: the manifest, checked against everything read before it.
    Manifest(Manifest),
}

/// Reads a backup, checking it as it goes (see the module comment): every item it hands
/// out before the manifest is provisional until [`ReadItem::Manifest`] comes, the proof
/// that the whole file is as written.
pub struct BackupReader {
    lines: BufReader<zstd::Decoder<'static, BufReader<Counting<File>>>>,
    header: BackupHeader,
    sums: Sums,
    line: u64,
    buffer: String,
    last_position: u64,
    table_index: usize,
    finished: bool,
    read: Arc<AtomicU64>,
    size: u64,
}

impl BackupReader {
    /// Opens a backup and reads its header.
    pub fn open(path: &Path) -> Result<Self, BackupError> {
        let io = |action, source| BackupError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let size = file.metadata().map_err(|e| io("read", e))?.len();
        let read = Arc::new(AtomicU64::new(0));
        let decoder = zstd::Decoder::new(Counting {
            inner: file,
            read: read.clone(),
        })
        .map_err(|e| io("read", e))?;
        let mut reader = Self {
            lines: BufReader::new(decoder),
            header: BackupHeader {
                format: String::new(),
                format_version: 0,
                created_at: DateTime::<Utc>::UNIX_EPOCH,
                source: String::new(),
                position: 0,
                since: 0,
            },
            sums: Sums::default(),
            line: 0,
            buffer: String::new(),
            last_position: 0,
            table_index: 0,
            finished: false,
            read,
            size,
        };
        if !reader.next_line()? {
            return Err(BackupError::NoManifest { line: 0 });
        }
        let header: BackupHeader = serde_json::from_str(&reader.buffer)
            .map_err(|e| line_error(1, format!("is not a cornershop backup's header ({e})")))?;
        if header.format != FORMAT {
            return Err(line_error(
                1,
                format!("the file's format is {:?}, not {FORMAT:?}", header.format),
            ));
        }
        if header.format_version != FORMAT_VERSION {
            return Err(line_error(
                1,
                format!(
                    "the backup's format version is {}; this cornershop reads version \
                     {FORMAT_VERSION}",
                    header.format_version
                ),
            ));
        }
        reader.sums.line(reader.buffer.as_bytes());
        reader.last_position = header.since;
        reader.header = header;
        Ok(reader)
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Compressed bytes read so far, and the file's size.
    pub fn progress(&self) -> (u64, u64) {
        (self.read.load(Ordering::Relaxed), self.size)
    }

    /// Reads the next line into the buffer (without its newline); false at the end.
    fn next_line(&mut self) -> Result<bool, BackupError> {
        self.buffer.clear();
        let n = self
            .lines
            .read_line(&mut self.buffer)
            .map_err(|e| BackupError::Damaged {
                line: self.line,
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if !self.buffer.ends_with('\n') {
            return Err(line_error(
                self.line,
                "is cut short (no newline): the backup is truncated",
            ));
        }
        self.buffer.pop();
        Ok(true)
    }

    /// The next item; `None` after the manifest.
    pub fn next_item(&mut self) -> Result<Option<ReadItem>, BackupError> {
        if self.finished {
            return Ok(None);
        }
        if !self.next_line()? {
            return Err(BackupError::NoManifest { line: self.line });
        }
        let line = self.line;
        if self.buffer.starts_with("{\"manifest\":") {
            let ManifestLine { manifest } = serde_json::from_str(&self.buffer)
                .map_err(|e| line_error(line, format!("is no valid manifest: {e}")))?;
            self.check_manifest(&manifest)?;
            if self.next_line()? {
                return Err(line_error(
                    self.line,
                    "follows the manifest, which must be the last line",
                ));
            }
            self.finished = true;
            return Ok(Some(ReadItem::Manifest(manifest)));
        }
        let (table, row) = parse_row(&self.buffer).map_err(|reason| line_error(line, reason))?;
        let index = TABLES
            .iter()
            .position(|t| t.name == table.name)
            .expect("a table of TABLES");
        if index < self.table_index {
            return Err(line_error(
                line,
                format!(
                    "is a row of {} after rows of {}: the tables are out of order",
                    table.name, TABLES[self.table_index].name
                ),
            ));
        }
        self.table_index = index;
        if index == 0 {
            let position = event_position(&row);
            if position <= self.last_position {
                return Err(line_error(
                    line,
                    format!(
                        "is event {position}, not after event {}: the events are out of order",
                        self.last_position
                    ),
                ));
            }
            if position > self.header.position {
                return Err(line_error(
                    line,
                    format!(
                        "is event {position}, above the backup's position {}",
                        self.header.position
                    ),
                ));
            }
            self.last_position = position;
        }
        self.sums.line(self.buffer.as_bytes());
        self.sums.row(table, &row, self.buffer.as_bytes());
        Ok(Some(ReadItem::Row(table, row)))
    }

    fn check_manifest(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let mismatch = |what: String| Err(BackupError::Mismatch(what));
        if manifest.position != self.header.position || manifest.since != self.header.since {
            return mismatch(format!(
                "the manifest says position {} since {}, the header {} since {}",
                manifest.position, manifest.since, self.header.position, self.header.since
            ));
        }
        let read = self.sums.manifest(manifest.position, manifest.since);
        for table in TABLES {
            let said = manifest.rows.get(table.name).copied().unwrap_or(0);
            let found = read.rows.get(table.name).copied().unwrap_or(0);
            if said != found {
                return mismatch(format!(
                    "{found} rows of {} are in the file, the manifest counts {said} (a line \
                     is missing or was added)",
                    table.name
                ));
            }
        }
        for (aggregate, sum) in &manifest.aggregates {
            match read.aggregates.get(aggregate) {
                None => return mismatch(format!("no event of {aggregate} is in the file")),
                Some(found) if found.events != sum.events => {
                    return mismatch(format!(
                        "{} events of {aggregate} are in the file, the manifest counts {}",
                        found.events, sum.events
                    ))
                }
                Some(found) if found != sum => {
                    return mismatch(format!(
                        "the events of {aggregate} differ from those the backup was written \
                         with (checksum {} instead of {})",
                        found.sha256, sum.sha256
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = read
            .aggregates
            .keys()
            .find(|k| !manifest.aggregates.contains_key(*k))
        {
            return mismatch(format!(
                "events of {extra} are in the file, not in the manifest"
            ));
        }
        if read.sha256 != manifest.sha256 {
            return mismatch(format!(
                "the file's checksum is {}, the manifest's {}: a line was changed",
                read.sha256, manifest.sha256
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64, aggregate: &str, version: i64) -> Row {
        EVENTS
            .columns
            .iter()
            .map(|c| match c.name {
                "position" => Cell::Int(position),
                "version" => Cell::Int(version),
                "schemaVersion" => Cell::Int(2),
                "aggregateId" => Cell::Text(aggregate.into()),
                "aggregateType" => Cell::Text("Cart".into()),
                "eventId" => Cell::Uuid(uuid::Uuid::new_v4().to_string()),
                "timestamp" => Cell::Time(1_700_000_000_123_456),
                "data" => Cell::Json(r#"{"b":1, "a":"x"}"#.into()),
                "metadata" => Cell::Json(r#"{"correlationId":"c"}"#.into()),
                _ if c.nullable => Cell::Null,
                _ => Cell::Text("t".into()),
            })
            .collect()
    }

    fn write(path: &Path) -> Vec<Row> {
        let header = BackupHeader {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_at: Utc::now(),
            source: "sqlite".into(),
            position: 3,
            since: 0,
        };
        let rows = vec![event(1, "a", 1), event(2, "b", 1), event(3, "a", 2)];
        let mut writer = BackupWriter::create(path, header).unwrap();
        writer.rows(&EVENTS, &rows).unwrap();
        let cut = Cut {
            position: 3,
            since: 0,
            rows: vec![("events", 3)],
        };
        writer.finish(&cut).unwrap();
        rows
    }

    fn read_all(path: &Path) -> Result<(Vec<Row>, Manifest), BackupError> {
        let mut reader = BackupReader::open(path)?;
        let mut rows = Vec::new();
        loop {
            match reader.next_item()? {
                Some(ReadItem::Row(_, row)) => rows.push(row),
                Some(ReadItem::Manifest(m)) => return Ok((rows, m)),
                None => unreachable!(),
            }
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        let text = zstd::decode_all(File::open(path).unwrap()).unwrap();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        let text = lines.join("\n") + "\n";
        std::fs::write(path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
    }

    #[test]
    fn a_backup_reads_back_as_written_its_json_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.zst");
        let rows = write(&path);
        let (read, manifest) = read_all(&path).unwrap();
        assert_eq!(read, rows);
        assert_eq!(manifest.rows["events"], 3);
        assert_eq!(manifest.aggregates["Cart/a"].events, 2);
        assert_eq!(manifest.aggregates["Cart/a"].last_version, 2);
        assert!(lines(&path)[1].contains(r#""data":{"b":1, "a":"x"}"#));
        assert!(!dir.path().join("b.partial").exists());
    }

    #[test]
    fn a_changed_removed_or_cut_backup_is_refused_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.zst");
        write(&path);
        let good = lines(&path);

        let mut changed = good.clone();
        changed[2] = changed[2].replace(r#""b":1"#, r#""b":2"#);
        rewrite(&path, &changed);
        let err = read_all(&path).unwrap_err().to_string();
        assert!(err.contains("events of Cart/b differ"), "{err}");

        let mut removed = good.clone();
        removed.remove(2);
        rewrite(&path, &removed);
        let err = read_all(&path).unwrap_err().to_string();
        assert!(
            err.contains("2 rows of events are in the file, the manifest counts 3"),
            "{err}"
        );

        rewrite(&path, &good[..3]);
        let err = read_all(&path).unwrap_err().to_string();
        assert!(err.contains("without its manifest"), "{err}");

        rewrite(&path, &good);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_all(&path).unwrap_err().to_string();
        assert!(err.contains("damaged or truncated"), "{err}");
    }
}
