//! From serde records to Arrow record batches.
//!
//! The schema is traced from the record type once, at start-up (`serde_arrow`): integers,
//! floats, strings, booleans, `Option`s (nullable), nested structs, `Vec`s (lists) and unit
//! enums (dictionary-encoded strings) all map to their Arrow types. Columns named in
//! `timestamp_columns` are converted afterwards, a whole column at a time, into
//! `Timestamp(Millisecond, "UTC")`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::compute::{cast, cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_arrow::schema::{SchemaLike, TracingOptions};
use tributary_runtime::ConfigError;

/// The Arrow type of a timestamp column.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

const UTC: &str = "UTC";

/// How records of one type become record batches.
#[derive(Debug, Clone)]
pub(crate) struct RecordSchema {
    /// The fields as traced from the type (what `serde_arrow` builds).
    traced: Vec<FieldRef>,
    /// The fields as written.
    schema: SchemaRef,
    /// Indexes of the columns turned into timestamps.
    timestamps: Vec<usize>,
}

impl RecordSchema {
    /// Traces the schema of `D`; `timestamp_columns` must be top-level integer or string
    /// columns (errors name the `timestamp_columns` key).
    pub(crate) fn of<D: Serialize + DeserializeOwned>(
        timestamp_columns: &[String],
    ) -> Result<Self, ConfigError> {
        let options = TracingOptions::default()
            .strings_as_large_utf8(false)
            .sequence_as_large_list(false)
            .bytes_as_large_binary(false)
            .enums_without_data_as_strings(true)
            .allow_null_fields(true);
        let traced = Vec::<FieldRef>::from_type::<D>(options).map_err(|e| {
            ConfigError::new(
                "kind",
                format!(
                    "the record type `{}` cannot be written as Parquet: {e}",
                    std::any::type_name::<D>()
                ),
            )
        })?;
        // Parquet has no union type: the one place serde types do not map.
        if let Some(field) = traced.iter().find(|f| has_union(f.data_type())) {
            return Err(ConfigError::new(
                "kind",
                format!(
                    "the record type `{}` cannot be written as Parquet: field `{}` is an enum \
                     with data (a union); use a struct with optional fields instead",
                    std::any::type_name::<D>(),
                    field.name()
                ),
            ));
        }
        let mut fields = traced.clone();
        let mut timestamps = Vec::new();
        for name in timestamp_columns {
            let error = |reason: String| ConfigError::new("timestamp_columns", reason);
            let index = traced.iter().position(|f| f.name() == name).ok_or_else(|| {
                error(format!("no top-level column `{name}`; {}", names(&traced)))
            })?;
            let field = &traced[index];
            if !(field.data_type().is_integer() || *field.data_type() == DataType::Utf8) {
                return Err(error(format!(
                    "column `{name}` is {}; a timestamp column must hold integers (epoch \
                     milliseconds) or RFC 3339 strings",
                    field.data_type()
                )));
            }
            fields[index] = Arc::new(Field::new(name, timestamp_type(), field.is_nullable()));
            timestamps.push(index);
        }
        Ok(RecordSchema { traced, schema: Arc::new(Schema::new(fields)), timestamps })
    }

    /// The schema of the written files.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Builds one record batch from `records`.
    pub(crate) fn batch<D: Serialize>(&self, records: &[D]) -> Result<RecordBatch, String> {
        let batch =
            serde_arrow::to_record_batch(&self.traced, &records).map_err(|e| e.to_string())?;
        let mut columns = batch.columns().to_vec();
        for &index in &self.timestamps {
            columns[index] = to_timestamps(&columns[index])
                .map_err(|e| format!("column `{}`: {e}", self.traced[index].name()))?;
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}

/// Converts integer (epoch milliseconds) or RFC 3339 string values into UTC timestamps.
fn to_timestamps(column: &ArrayRef) -> Result<ArrayRef, String> {
    let millis = if *column.data_type() == DataType::Utf8 {
        // Parse as naive UTC (an explicit offset in the string is applied), then label UTC.
        let strict = CastOptions { safe: false, ..CastOptions::default() };
        let parsed =
            cast_with_options(column, &DataType::Timestamp(TimeUnit::Millisecond, None), &strict)
                .map_err(|e| e.to_string())?;
        cast(&parsed, &DataType::Int64).map_err(|e| e.to_string())?
    } else {
        let strict = CastOptions { safe: false, ..CastOptions::default() };
        cast_with_options(column, &DataType::Int64, &strict).map_err(|e| e.to_string())?
    };
    let millis = millis
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| "cast to Int64 returned another type".to_owned())?;
    let array = TimestampMillisecondArray::new(millis.values().clone(), millis.nulls().cloned())
        .with_timezone(UTC);
    Ok(Arc::new(array))
}

fn has_union(data_type: &DataType) -> bool {
    match data_type {
        DataType::Union(..) => true,
        DataType::Struct(fields) => fields.iter().any(|f| has_union(f.data_type())),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            has_union(f.data_type())
        }
        DataType::Map(f, _) => has_union(f.data_type()),
        _ => false,
    }
}

fn names(fields: &[FieldRef]) -> String {
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    format!("the columns are {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::TimestampMillisecondType;
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize)]
    enum Kind {
        Temperature,
        Humidity,
    }

    #[derive(Serialize, Deserialize)]
    struct Reading {
        device: u32,
        kind: Kind,
        ts: u64,
        start: String,
        value: f64,
        note: Option<String>,
        tags: Vec<String>,
    }

    fn reading(ts: u64, start: &str) -> Reading {
        Reading {
            device: 7,
            kind: Kind::Humidity,
            ts,
            start: start.into(),
            value: 1.5,
            note: None,
            tags: vec!["a".into()],
        }
    }

    #[test]
    fn traces_types_and_converts_timestamps() {
        let schema = RecordSchema::of::<Reading>(&["ts".into(), "start".into()]).unwrap();
        let types: Vec<String> =
            schema.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(types[0], "UInt32");
        assert_eq!(types[2], timestamp_type().to_string());
        assert_eq!(types[3], timestamp_type().to_string());
        assert!(schema.schema().field(5).is_nullable());
        let rows = [reading(1_000, "2026-01-01T00:01:00.000Z"), reading(2, "1970-01-01T00:00:00Z")];
        let batch = schema.batch(&rows).unwrap();
        let ts = batch.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values().to_vec(), vec![1_000, 2]);
        let start = batch.column(3).as_primitive::<TimestampMillisecondType>();
        assert_eq!(start.values().to_vec(), vec![1_767_225_660_000, 0]);
        let kind = arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap();
        assert_eq!(kind.as_any().downcast_ref::<StringArray>().unwrap().value(0), "Humidity");
    }

    #[test]
    fn a_malformed_time_string_is_an_error_naming_the_column() {
        let schema = RecordSchema::of::<Reading>(&["start".into()]).unwrap();
        let error = schema.batch(&[reading(0, "yesterday")]).unwrap_err();
        assert!(error.contains("column `start`"), "{error}");
    }

    #[test]
    fn timestamp_columns_are_checked() {
        let missing = RecordSchema::of::<Reading>(&["time".into()]).unwrap_err();
        assert_eq!(missing.key, "timestamp_columns");
        assert!(missing.reason.contains("device, kind, ts"), "{}", missing.reason);
        let wrong = RecordSchema::of::<Reading>(&["value".into()]).unwrap_err();
        assert!(wrong.reason.contains("Float64"), "{}", wrong.reason);

        #[derive(Serialize, Deserialize)]
        enum Shape {
            Circle(f64),
            Square { side: f64 },
        }
        #[derive(Serialize, Deserialize)]
        struct WithUnion {
            shape: Shape,
        }
        let union = RecordSchema::of::<WithUnion>(&[]).unwrap_err();
        assert!(union.reason.contains("field `shape` is an enum with data"), "{}", union.reason);
    }
}
