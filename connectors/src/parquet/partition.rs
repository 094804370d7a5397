//! Hive-style partition folders (`dt=2026-11-22/hour=13`) computed from record batches.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::row::{Row, RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use chrono::DateTime;
use tributary_runtime::ConfigError;

/// Hive's folder name for a null or empty partition value.
pub(crate) const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A parsed `partition_by` template.
#[derive(Debug, Clone)]
pub(crate) struct Partitioner {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    /// A column's value, as text.
    Value(usize),
    /// A timestamp or epoch-milliseconds column formatted with `strftime` in UTC; values in
    /// the same `granule` of milliseconds share a folder.
    Time {
        column: usize,
        format: String,
        granule: i64,
    },
}

/// Rows of one batch that go to one partition (`None`: every row).
pub(crate) type Split = (String, Option<UInt32Array>);

impl Partitioner {
    /// Parses `template` against `schema`; errors name the `partition_by` key.
    pub(crate) fn parse(template: &str, schema: &Schema) -> Result<Self, ConfigError> {
        let error = |reason: String| ConfigError::new("partition_by", reason);
        let mut pieces = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                pieces.push(Piece::Literal(rest.to_owned()));
                break;
            };
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| error(format!("`{template}`: a `{{` is never closed")))?;
            let spec = &rest[open + 1..close];
            let (name, format) = match spec.split_once(':') {
                Some((name, format)) => (name, Some(format)),
                None => (spec, None),
            };
            let column = schema.index_of(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                error(format!(
                    "`{template}`: no column `{name}`; the columns are {}",
                    names.join(", ")
                ))
            })?;
            let data_type = schema.field(column).data_type();
            pieces.push(match format {
                None => Piece::Value(column),
                Some(format) => {
                    if !(matches!(data_type, DataType::Timestamp(..)) || data_type.is_integer()) {
                        return Err(error(format!(
                            "`{template}`: `{name}` is {data_type}; a `:FORMAT` needs a timestamp \
                             column (list it in `timestamp_columns`) or epoch milliseconds"
                        )));
                    }
                    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
                        return Err(error(format!(
                            "`{template}`: `{format}` is not a valid strftime format"
                        )));
                    }
                    Piece::Time { column, format: format.to_owned(), granule: granule(format) }
                }
            });
            rest = &rest[close + 1..];
        }
        if template.starts_with('/') || template.split('/').any(|part| part == ".." || part == ".")
        {
            return Err(error(format!("`{template}` must be a relative path without `.` or `..`")));
        }
        Ok(Partitioner { pieces })
    }

    /// Splits a batch by partition folder. Rows are grouped on their raw values (time columns
    /// truncated to the coarsest unit their format shows, e.g. the hour for `%H`) and each
    /// folder name is formatted once per group, not once per row.
    pub(crate) fn split(&self, batch: &RecordBatch) -> Result<Vec<Split>, String> {
        let mut keys: Vec<ArrayRef> = Vec::new();
        let mut millis: Vec<Option<ArrayRef>> = Vec::with_capacity(self.pieces.len());
        for piece in &self.pieces {
            millis.push(match piece {
                Piece::Literal(_) => None,
                Piece::Value(c) => {
                    keys.push(batch.column(*c).clone());
                    None
                }
                Piece::Time { column, granule, .. } => {
                    let values =
                        cast(batch.column(*column), &DataType::Int64).map_err(|e| e.to_string())?;
                    let truncated: Int64Array =
                        values.as_primitive::<Int64Type>().unary(|v: i64| v.div_euclid(*granule));
                    keys.push(Arc::new(truncated));
                    Some(values)
                }
            });
        }
        // Group the rows on the byte-comparable encoding of their key columns.
        let mut first_rows: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        if keys.is_empty() {
            first_rows.push(0);
        } else {
            let fields = keys.iter().map(|k| SortField::new(k.data_type().clone())).collect();
            let converter = RowConverter::new(fields).map_err(|e| e.to_string())?;
            let rows = converter.convert_columns(&keys).map_err(|e| e.to_string())?;
            let mut groups: HashMap<Row<'_>, usize> = HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                let next = first_rows.len();
                let group = *groups.entry(row).or_insert(next);
                if group == next {
                    first_rows.push(i);
                    members.push(Vec::new());
                }
                members[group].push(i as u32);
            }
        }
        if first_rows.len() == 1 {
            return Ok(vec![(self.folder(batch, &millis, first_rows[0])?, None)]);
        }
        // Distinct raw values may still share a folder (a null and an empty string).
        let mut splits: Vec<(String, Vec<u32>)> = Vec::with_capacity(first_rows.len());
        let mut by_folder: HashMap<String, usize> = HashMap::new();
        for (first, rows) in first_rows.into_iter().zip(members) {
            let folder = self.folder(batch, &millis, first)?;
            match by_folder.get(&folder) {
                Some(&i) => splits[i].1.extend(rows),
                None => {
                    by_folder.insert(folder.clone(), splits.len());
                    splits.push((folder, rows));
                }
            }
        }
        Ok(splits
            .into_iter()
            .map(|(folder, mut rows)| {
                rows.sort_unstable();
                (folder, Some(UInt32Array::from(rows)))
            })
            .collect())
    }

    /// The folder of one row.
    fn folder(
        &self,
        batch: &RecordBatch,
        millis: &[Option<ArrayRef>],
        row: usize,
    ) -> Result<String, String> {
        let options = FormatOptions::default().with_null(NULL_PARTITION);
        let mut folder = String::new();
        for (piece, millis) in self.pieces.iter().zip(millis) {
            match (piece, millis) {
                (Piece::Literal(text), _) => folder.push_str(text),
                (Piece::Value(c), _) => {
                    let formatter = ArrayFormatter::try_new(batch.column(*c).as_ref(), &options)
                        .map_err(|e| e.to_string())?;
                    push_escaped(&mut folder, &formatter.value(row).to_string());
                }
                (Piece::Time { format, .. }, Some(millis)) => {
                    let millis = millis.as_primitive::<Int64Type>();
                    if millis.is_null(row) {
                        folder.push_str(NULL_PARTITION);
                    } else {
                        folder.push_str(&format_millis(millis.value(row), format)?);
                    }
                }
                (Piece::Time { .. }, None) => unreachable!("time pieces have their millis"),
            }
        }
        Ok(folder)
    }
}

/// The coarsest unit (ms) below which a `strftime` format shows no change: a day for
/// `%Y-%m-%d`, an hour for `%H`; 1 for anything it cannot tell.
fn granule(format: &str) -> i64 {
    const SECOND: i64 = 1000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    StrftimeItems::new(format)
        .map(|item| match item {
            Item::Numeric(numeric, _) => match numeric {
                Numeric::Year
                | Numeric::YearDiv100
                | Numeric::YearMod100
                | Numeric::IsoYear
                | Numeric::IsoYearDiv100
                | Numeric::IsoYearMod100
                | Numeric::Quarter
                | Numeric::Month
                | Numeric::Day
                | Numeric::WeekFromSun
                | Numeric::WeekFromMon
                | Numeric::IsoWeek
                | Numeric::NumDaysFromSun
                | Numeric::WeekdayFromMon
                | Numeric::Ordinal => DAY,
                Numeric::Hour | Numeric::Hour12 => HOUR,
                Numeric::Minute => MINUTE,
                Numeric::Second => SECOND,
                _ => 1,
            },
            Item::Fixed(fixed) => match fixed {
                Fixed::ShortMonthName
                | Fixed::LongMonthName
                | Fixed::ShortWeekdayName
                | Fixed::LongWeekdayName
                | Fixed::TimezoneName
                | Fixed::TimezoneOffset
                | Fixed::TimezoneOffsetColon
                | Fixed::TimezoneOffsetZ => DAY,
                Fixed::LowerAmPm | Fixed::UpperAmPm => HOUR,
                _ => 1,
            },
            _ => DAY,
        })
        .min()
        .unwrap_or(DAY)
}

fn format_millis(millis: i64, format: &str) -> Result<String, String> {
    let time = DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| format!("{millis} ms is outside the range of dates"))?;
    let mut text = String::new();
    write!(text, "{}", time.format(format))
        .map_err(|_| format!("cannot format with `{format}`"))?;
    let mut escaped = String::with_capacity(text.len());
    push_escaped(&mut escaped, &text);
    Ok(escaped)
}

/// Appends a partition value, escaped as Hive does (`%2F` for `/`); empty is the null folder.
fn push_escaped(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str(NULL_PARTITION);
        return;
    }
    for c in value.chars() {
        if c.is_control() || "\"#%'*/:=?\\[]^{}".contains(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampMillisecondArray, UInt32Array};
    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
            Field::new("device", DataType::UInt32, false),
            Field::new("site", DataType::Utf8, true),
        ]);
        let hour = 3_600_000;
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(0), Some(hour), Some(1), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(UInt32Array::from(vec![1, 2, 1, 3])),
                Arc::new(StringArray::from(vec![Some("a/b"), Some(""), Some("a/b"), None])),
            ],
        )
        .unwrap()
    }

    fn keys(template: &str) -> Vec<(String, Vec<u32>)> {
        let batch = batch();
        let partitioner = Partitioner::parse(template, &batch.schema()).unwrap();
        partitioner
            .split(&batch)
            .unwrap()
            .into_iter()
            .map(|(k, rows)| {
                let rows = rows.map(|r| r.values().to_vec()).unwrap_or_else(|| vec![0, 1, 2, 3]);
                (k, rows)
            })
            .collect()
    }

    #[test]
    fn formats_times_values_and_nulls() {
        assert_eq!(
            keys("dt={ts:%Y-%m-%d}/hour={ts:%H}"),
            vec![
                ("dt=1970-01-01/hour=00".to_owned(), vec![0, 2]),
                ("dt=1970-01-01/hour=01".to_owned(), vec![1]),
                (format!("dt={NULL_PARTITION}/hour={NULL_PARTITION}"), vec![3]),
            ]
        );
        assert_eq!(
            keys("site={site}"),
            vec![
                ("site=a%2Fb".to_owned(), vec![0, 2]),
                (format!("site={NULL_PARTITION}"), vec![1, 3]),
            ]
        );
        assert_eq!(keys("all"), vec![("all".to_owned(), vec![0, 1, 2, 3])]);
    }

    #[test]
    fn granules_follow_the_finest_field_shown() {
        assert_eq!(granule("%Y-%m-%d"), 86_400_000);
        assert_eq!(granule("%Y/%H"), 3_600_000);
        assert_eq!(granule("%H:%M"), 60_000);
        assert_eq!(granule("%s"), 1);
        assert_eq!(granule("%S%.3f"), 1);
    }

    #[test]
    fn integers_format_as_epoch_millis() {
        assert_eq!(keys("d={device:%S%.3f}")[0].0, "d=00.001");
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let schema = batch().schema();
        for (template, needle) in [
            ("dt={ts", "never closed"),
            ("dt={time:%Y}", "no column `time`; the columns are ts, device, site"),
            ("s={site:%Y}", "needs a timestamp column"),
            ("dt={ts:%Q}", "not a valid strftime"),
            ("../x={device}", "relative path"),
        ] {
            let error = Partitioner::parse(template, &schema).unwrap_err();
            assert_eq!(error.key, "partition_by");
            assert!(error.reason.contains(needle), "{template}: {}", error.reason);
        }
    }
}
