//! The export's rows as PostgreSQL sends them in `COPY ... TO STDOUT (FORMAT binary)`.
//!
//! The binary COPY format (PostgreSQL docs, "COPY", "Binary Format"): a header, then per
//! row a 16-bit field count and per field a 32-bit length (-1 for NULL) and the value in the
//! type's binary send format, then a trailer of -1. Reading the rows this way instead of as
//! query results spares the per-row work of a driver's row type (column lookups by name, an
//! owned string per text field): the fields are read in place from the received bytes.

use anyhow::{Context, bail, ensure};
use uuid::Uuid;

use super::columns::{ModelScore, PaymentRow, ShadowScore};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Fields of each row, in the order of the export's SELECT ([`SELECT`]).
pub const FIELDS: i16 = 20;

/// The export's select list, in the order [`CopyReader::next_row`] reads it. The decision's
/// rules outcome and scores come from the decision as received (JSON: its numbers' text is
/// what the engine wrote, so the float8 is the engine's f64 exactly); its feature values from
/// their own float8[] column.
pub const SELECT: &str = "id, amount_minor, currency::text, user_id, payee_id, status,
    decision->>'outcome', (decision->>'decided_at')::timestamptz, created_at,
    disputed_at, dispute_reason, decision->>'rules_outcome',
    decision_features_version, decision_features,
    decision->'model'->>'version', (decision->'model'->>'score')::float8,
    (decision->'model'->>'threshold')::float8,
    decision->'shadow'->>'version', (decision->'shadow'->>'score')::float8, refunded_minor";

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
    pub fn next_row(&mut self) -> anyhow::Result<Option<PaymentRow<'_>>> {
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
        let text_at = |i: usize| value(i).map(text).transpose();
        let float8_at = |i: usize| value(i).map(float8).transpose();
        let model = match (text_at(14)?, float8_at(15)?, float8_at(16)?) {
            (Some(version), Some(score), Some(threshold)) => Some(ModelScore {
                version,
                score,
                threshold,
            }),
            _ => None,
        };
        let shadow = match (text_at(17)?, float8_at(18)?) {
            (Some(version), Some(score)) => Some(ShadowScore { version, score }),
            _ => None,
        };
        Ok(Some(PaymentRow {
            id: uuid(not_null(0, "id")?)?,
            amount_minor: int8(not_null(1, "amount_minor")?)?,
            currency: text(not_null(2, "currency")?)?,
            user_id: uuid(not_null(3, "user_id")?)?,
            payee_id: uuid(not_null(4, "payee_id")?)?,
            status: text(not_null(5, "status")?)?,
            decision_outcome: text_at(6)?,
            decided_at: value(7).map(timestamp).transpose()?,
            created_at: timestamp(not_null(8, "created_at")?)?,
            disputed_at: value(9).map(timestamp).transpose()?,
            dispute_reason: text_at(10)?,
            rules_outcome: text_at(11)?,
            features_version: text_at(12)?,
            features: value(13).map(float8_array).transpose()?,
            model,
            shadow,
            refunded_amount_minor: int8(not_null(19, "refunded_minor")?)?,
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

fn float8(value: &[u8]) -> anyhow::Result<f64> {
    match <[u8; 8]>::try_from(value) {
        Ok(bytes) => Ok(f64::from_be_bytes(bytes)),
        Err(_) => bail!("a float8 of the wrong length"),
    }
}

/// A one-dimensional float8[] without NULL items, in the array binary format: dimensions,
/// a has-NULLs flag, the element type, each dimension's length and lower bound, then each
/// item as a length and a value. An empty array has no dimensions.
fn float8_array(value: &[u8]) -> anyhow::Result<Vec<f64>> {
    const FLOAT8_OID: i32 = 701;
    let header = |at: usize| read_i32(value, at).context("a truncated array");
    let dimensions = header(0)?;
    ensure!(
        header(8)? == FLOAT8_OID,
        "an array of type {} where float8 was expected",
        header(8)?
    );
    let len = match dimensions {
        0 => return Ok(Vec::new()),
        1 => usize::try_from(header(12)?).context("a negative array length")?,
        n => bail!("a {n}-dimensional array where a list was expected"),
    };
    let mut values = Vec::with_capacity(len);
    let mut at = 20;
    for _ in 0..len {
        let item = header(at)?;
        ensure!(item != -1, "a NULL feature value");
        ensure!(item == 8, "a float8 item of {item} bytes");
        values.push(float8(
            value.get(at + 4..at + 12).context("a truncated array")?,
        )?);
        at += 12;
    }
    ensure!(at == value.len(), "trailing bytes after an array");
    Ok(values)
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
            // The optional columns in between, then `refunded_minor` (never NULL).
            for _ in 9..FIELDS - 1 {
                field(&mut out, None);
            }
            field(&mut out, Some(&0i64.to_be_bytes()));
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

    fn array(dimensions: i32, items: &[Option<f64>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&dimensions.to_be_bytes());
        out.extend_from_slice(&i32::from(items.iter().any(Option::is_none)).to_be_bytes());
        out.extend_from_slice(&701i32.to_be_bytes());
        if dimensions > 0 {
            out.extend_from_slice(&(items.len() as i32).to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
        }
        for item in items {
            field(
                &mut out,
                item.map(|v| v.to_be_bytes()).as_ref().map(|b| b.as_slice()),
            );
        }
        out
    }

    #[test]
    fn float8_arrays_are_read_exactly_and_checked() {
        let values = [0.1 + 0.2, -0.0, 1e300, f64::MIN_POSITIVE];
        let read = float8_array(&array(1, &values.map(Some))).unwrap();
        assert_eq!(
            read.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.map(f64::to_bits)
        );
        assert_eq!(float8_array(&array(0, &[])).unwrap(), Vec::<f64>::new());
        let null = float8_array(&array(1, &[Some(1.0), None])).unwrap_err();
        assert!(null.to_string().contains("NULL"), "{null}");
        assert!(float8_array(&array(2, &[Some(1.0)])).is_err());
        let mut truncated = array(1, &[Some(1.0), Some(2.0)]);
        truncated.pop();
        assert!(float8_array(&truncated).is_err());
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
        // From the end: the trailer, `refunded_minor` (a length and 8 bytes), the NULLs
        // before it, then `created_at`'s 8 bytes.
        let created = data.len() - 2 - (4 + 8) - 4 * (FIELDS as usize - 10) - 8;
        data[created..created + 8].copy_from_slice(&i64::MAX.to_be_bytes());
        let mut reader = CopyReader::default();
        reader.feed(&data);
        let error = reader.next_row().unwrap_err().to_string();
        assert!(error.contains("infinite"), "{error}");
    }
}
