//! The export's rows as PostgreSQL sends them in `COPY ... TO STDOUT (FORMAT binary)`.
//!
//! The binary COPY format (PostgreSQL docs, "COPY", "Binary Format"): a header, then per
//! row a 16-bit field count and per field a 32-bit length (-1 for NULL) and the value in the
//! type's binary send format, then a trailer of -1. Reading the rows this way instead of as
//! query results spares the per-row work of a driver's row type (column lookups by name, an
//! owned string per text field): the fields are read in place from the received bytes.

use anyhow::{Context, bail, ensure};
use uuid::Uuid;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Fields of each row, in the order of the export's SELECT.
pub const FIELDS: i16 = 9;

/// One payment, borrowed from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRow<'a> {
    pub id: Uuid,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub status: &'a str,
    pub decision_outcome: Option<&'a str>,
    /// Microseconds since the Unix epoch.
    pub decided_at: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
}

/// Parses a stream of COPY data, chunk by chunk; chunks need not end at a row's end.
#[derive(Default)]
pub struct CopyReader {
    buf: Vec<u8>,
    pos: usize,
    header_read: bool,
    finished: bool,
}

impl CopyReader {
    /// Adds the next chunk of the stream (the rows before it must have been read).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the trailer has been read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next complete row, or `None` until more data is fed (or after the trailer).
    pub fn next_row(&mut self) -> anyhow::Result<Option<RawRow<'_>>> {
        if self.finished {
            return Ok(None);
        }
        if !self.header_read {
            let Some(len) = header_len(&self.buf[self.pos..])? else {
                return Ok(None);
            };
            self.pos += len;
            self.header_read = true;
        }
        let mut fields = [(0usize, -1i32); FIELDS as usize];
        let input = &self.buf[self.pos..];
        let Some(count) = read_i16(input, 0) else {
            return Ok(None);
        };
        if count == -1 {
            self.finished = true;
            self.pos += 2;
            return Ok(None);
        }
        ensure!(
            count == FIELDS,
            "COPY row with {count} fields, expected {FIELDS}"
        );
        let mut at = 2;
        for field in &mut fields {
            let Some(len) = read_i32(input, at) else {
                return Ok(None);
            };
            at += 4;
            *field = (at, len);
            if len > 0 {
                at += len as usize;
            } else {
                ensure!(len >= -1, "COPY field of length {len}");
            }
        }
        if at > input.len() {
            return Ok(None);
        }
        let start = self.pos;
        self.pos += at;
        let input = &self.buf[start..start + at];
        let value = |i: usize| -> Option<&[u8]> {
            let (offset, len) = fields[i];
            (len >= 0).then(|| &input[offset..offset + len as usize])
        };
        let not_null = |i: usize, name: &str| value(i).with_context(|| format!("{name} is NULL"));
        Ok(Some(RawRow {
            id: uuid(not_null(0, "id")?)?,
            amount_minor: int8(not_null(1, "amount_minor")?)?,
            currency: text(not_null(2, "currency")?)?,
            user_id: uuid(not_null(3, "user_id")?)?,
            payee_id: uuid(not_null(4, "payee_id")?)?,
            status: text(not_null(5, "status")?)?,
            decision_outcome: value(6).map(text).transpose()?,
            decided_at: value(7).map(timestamp).transpose()?,
            created_at: timestamp(not_null(8, "created_at")?)?,
        }))
    }
}

/// Length of the header at the start of `input`, or `None` when it is not all there yet.
fn header_len(input: &[u8]) -> anyhow::Result<Option<usize>> {
    let fixed = SIGNATURE.len() + 8;
    if input.len() < fixed {
        return Ok(None);
    }
    ensure!(
        input.starts_with(SIGNATURE),
        "not PostgreSQL's binary COPY format"
    );
    let extension = read_i32(input, SIGNATURE.len() + 4).expect("checked length");
    ensure!(extension >= 0, "bad COPY header");
    let len = fixed + extension as usize;
    Ok((input.len() >= len).then_some(len))
}

fn read_i16(input: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(input.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(input: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(input.get(at..at + 4)?.try_into().ok()?))
}

fn uuid(value: &[u8]) -> anyhow::Result<Uuid> {
    Uuid::from_slice(value).context("a uuid of the wrong length")
}

fn int8(value: &[u8]) -> anyhow::Result<i64> {
    match <[u8; 8]>::try_from(value) {
        Ok(bytes) => Ok(i64::from_be_bytes(bytes)),
        Err(_) => bail!("a bigint of the wrong length"),
    }
}

fn text(value: &[u8]) -> anyhow::Result<&str> {
    std::str::from_utf8(value).context("text that is not UTF-8")
}

/// A timestamptz (microseconds since 2000-01-01 UTC) as microseconds since the Unix epoch;
/// `infinity` and `-infinity` are refused.
fn timestamp(value: &[u8]) -> anyhow::Result<i64> {
    let pg = int8(value)?;
    ensure!(
        pg != i64::MAX && pg != i64::MIN,
        "an infinite timestamp cannot be exported"
    );
    pg.checked_add(PG_EPOCH_US)
        .context("a timestamp out of range")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    fn stream(rows: usize) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&3i32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for i in 0..rows {
            out.extend_from_slice(&FIELDS.to_be_bytes());
            field(&mut out, Some(Uuid::from_u128(i as u128).as_bytes()));
            field(&mut out, Some(&(i as i64 * 100).to_be_bytes()));
            field(&mut out, Some(b"EUR"));
            field(&mut out, Some(Uuid::from_u128(7).as_bytes()));
            field(&mut out, Some(Uuid::from_u128(8).as_bytes()));
            field(&mut out, Some(b"approved"));
            field(&mut out, (i % 2 == 0).then_some(b"approved".as_slice()));
            field(
                &mut out,
                (i % 2 == 0).then_some(0i64.to_be_bytes().as_slice()),
            );
            field(&mut out, Some(&(i as i64).to_be_bytes()));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_are_read_whatever_the_chunk_boundaries() {
        let data = stream(5);
        for chunk in [1, 2, 7, 64, data.len()] {
            let mut reader = CopyReader::default();
            let mut rows = Vec::new();
            for piece in data.chunks(chunk) {
                reader.feed(piece);
                while let Some(row) = reader.next_row().unwrap() {
                    rows.push((
                        row.id,
                        row.amount_minor,
                        row.currency.to_owned(),
                        row.decision_outcome.map(str::to_owned),
                        row.decided_at,
                        row.created_at,
                    ));
                }
            }
            assert!(reader.finished(), "chunk {chunk}");
            assert_eq!(rows.len(), 5, "chunk {chunk}");
            assert_eq!(rows[3].0, Uuid::from_u128(3));
            assert_eq!(rows[3].1, 300);
            assert_eq!(rows[3].2, "EUR");
            assert_eq!(rows[3].3, None);
            assert_eq!(rows[2].3.as_deref(), Some("approved"));
            assert_eq!(rows[2].4, Some(PG_EPOCH_US));
            assert_eq!(rows[4].5, PG_EPOCH_US + 4);
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        let mut reader = CopyReader::default();
        reader.feed(b"PGCOPY\n\xff\r\n\x01garbage-garbage");
        assert!(reader.next_row().is_err());

        let mut data = stream(1);
        // The first row's id field: 15 bytes instead of 16.
        let at = SIGNATURE.len() + 8 + 3 + 2;
        data[at..at + 4].copy_from_slice(&15i32.to_be_bytes());
        data.remove(at + 4);
        let mut reader = CopyReader::default();
        reader.feed(&data);
        assert!(reader.next_row().is_err());

        let mut data = stream(1);
        let created = data.len() - 2 - 8;
        data[created..created + 8].copy_from_slice(&i64::MAX.to_be_bytes());
        let mut reader = CopyReader::default();
        reader.feed(&data);
        let error = reader.next_row().unwrap_err().to_string();
        assert!(error.contains("infinite"), "{error}");
    }
}
