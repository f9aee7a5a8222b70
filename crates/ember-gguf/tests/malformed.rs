//! Hand-built malformed GGUF files: each must fail with its own specific error, never a panic.
#![allow(clippy::unwrap_used)]

use ember_gguf::{
    Array, GgmlType, GgufError, GgufFile, GgufWriter, Limits, Value, parse, parse_with_limits,
};

fn valid() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["a".into(), "b".into()])),
        )
        .tensor("a.weight", &[32, 2], GgmlType::Q8_0, vec![0; 68])
        .tensor("b.weight", &[4], GgmlType::F32, vec![0; 16])
}

/// Offset of the first tensor-table entry in `valid()`'s bytes.
fn tensor_table_offset(bytes: &[u8]) -> usize {
    let needle = b"a.weight";
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        - 8
}

#[test]
fn valid_file_round_trips() {
    let bytes = valid().to_bytes();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.tensors().len(), 2);
    let a = f.tensor("a.weight").unwrap();
    assert_eq!((a.row_len(), a.n_rows(), a.n_bytes()), (32, 2, 68));
    assert_eq!(f.tensor_data(a).unwrap().len(), 68);
    assert_eq!(f.tensor("b.weight").unwrap().offset(), 96);
    let v2 = valid().version(2).to_bytes();
    assert_eq!(parse(&v2).unwrap().version, 2);
}

#[test]
fn wrong_magic() {
    let mut b = valid().to_bytes();
    b[..4].copy_from_slice(b"GGML");
    assert!(matches!(parse(&b), Err(GgufError::BadMagic { .. })));
    assert!(matches!(
        parse(b"PK\x03\x04"),
        Err(GgufError::BadMagic { .. })
    ));
}

#[test]
fn truncated_header() {
    let b = valid().to_bytes();
    for cut in [0, 3, 4, 7, 12, 20, 30, 60] {
        match parse(&b[..cut]) {
            Err(GgufError::Truncated {
                offset, file_len, ..
            }) => {
                assert_eq!(file_len, cut as u64);
                assert!(offset <= cut as u64);
            }
            Err(GgufError::BadMagic { .. }) if cut < 4 => {}
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    // Every prefix that cuts into the header or tensor data fails cleanly; only the trailing
    // padding after the last tensor may go.
    let h = parse(&b).unwrap();
    let end = h
        .tensors
        .iter()
        .map(|t| h.data_offset + t.offset() + t.n_bytes())
        .max()
        .unwrap();
    for cut in 0..b.len() {
        assert_eq!(parse(&b[..cut]).is_ok(), cut as u64 >= end, "prefix {cut}");
    }
}

#[test]
fn unsupported_versions() {
    let mut b = valid().to_bytes();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        parse(&b),
        Err(GgufError::UnsupportedVersion { version: 1 })
    ));
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(parse(&b), Err(GgufError::BigEndian { .. })));
}

#[test]
fn huge_counts() {
    let mut b = valid().to_bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        parse(&b),
        Err(GgufError::TooLarge { offset: 8, .. })
    ));
    let mut b = valid().to_bytes();
    b[16..24].copy_from_slice(&50_000u64.to_le_bytes());
    assert!(matches!(
        parse(&b),
        Err(GgufError::Truncated { offset: 16, .. })
    ));
    // An array claiming more elements than the file could hold is refused before allocating.
    let b = GgufWriter::new()
        .kv("x", Value::Array(Array::U32(vec![1, 2])))
        .to_bytes();
    let mut b2 = b.clone();
    let len_at = b.len() - 8 - 8;
    b2[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(parse(&b2), Err(GgufError::TooLarge { .. })));
    b2[len_at..len_at + 8].copy_from_slice(&1000u64.to_le_bytes());
    assert!(matches!(parse(&b2), Err(GgufError::Truncated { .. })));
}

#[test]
fn huge_string() {
    let b = GgufWriter::new()
        .kv("k", Value::String("abc".into()))
        .to_bytes();
    let mut b2 = b.clone();
    let at = b.len() - 3 - 8;
    b2[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    match parse(&b2) {
        Err(GgufError::TooLarge { offset, .. }) => assert_eq!(offset, at as u64),
        other => panic!("{other:?}"),
    }
    let limits = Limits {
        max_string_len: 2,
        ..Limits::default()
    };
    assert!(matches!(
        parse_with_limits(&b, &limits),
        Err(GgufError::TooLarge { .. })
    ));
}

#[test]
fn invalid_utf8_key() {
    let mut b = GgufWriter::new().kv("kk", Value::U8(1)).to_bytes();
    b[32] = 0xff;
    assert!(matches!(
        parse(&b),
        Err(GgufError::InvalidUtf8 { offset: 32, .. })
    ));
}

#[test]
fn unknown_value_type() {
    let mut b = GgufWriter::new().kv("k", Value::U8(7)).to_bytes();
    let at = b.len() - 1 - 4;
    b[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    match parse(&b) {
        Err(GgufError::UnknownValueType {
            key,
            type_id: 13,
            offset,
        }) => {
            assert_eq!((key.as_str(), offset), ("k", at as u64));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_nesting() {
    let mut a = Array::U8(vec![1]);
    for _ in 0..6 {
        a = Array::Array(vec![a]);
    }
    let b = GgufWriter::new().kv("deep", Value::Array(a)).to_bytes();
    assert!(matches!(parse(&b), Err(GgufError::NestingTooDeep { .. })));
    let nested = Array::Array(vec![Array::String(vec!["x".into()]), Array::String(vec![])]);
    let b = GgufWriter::new()
        .kv("ok", Value::Array(nested.clone()))
        .to_bytes();
    assert_eq!(
        parse(&b).unwrap().metadata.get("ok"),
        Some(&Value::Array(nested))
    );
}

#[test]
fn duplicate_key_and_tensor() {
    let b = GgufWriter::new()
        .kv("a", Value::U8(1))
        .kv("a", Value::U8(2))
        .to_bytes();
    assert!(matches!(parse(&b), Err(GgufError::DuplicateKey { .. })));
    let b = GgufWriter::new()
        .tensor("t", &[4], GgmlType::F32, vec![0; 16])
        .tensor("t", &[4], GgmlType::F32, vec![0; 16])
        .to_bytes();
    assert!(matches!(parse(&b), Err(GgufError::DuplicateTensor { .. })));
}

#[test]
fn unknown_tensor_type() {
    let mut b = valid().to_bytes();
    let t = tensor_table_offset(&b);
    let type_at = t + 8 + 8 + 4 + 16;
    b[type_at..type_at + 4].copy_from_slice(&4u32.to_le_bytes()); // removed Q4_2
    match parse(&b) {
        Err(GgufError::UnknownTensorType {
            tensor,
            type_id: 4,
            offset,
        }) => {
            assert_eq!((tensor.as_str(), offset), ("a.weight", t as u64));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_shapes() {
    let shape = |dims: &[u64], ty| {
        let b = GgufWriter::new().tensor("t", dims, ty, vec![]).to_bytes();
        parse(&b)
    };
    assert!(matches!(
        shape(&[], GgmlType::F32),
        Err(GgufError::BadTensorShape { .. })
    ));
    assert!(matches!(
        shape(&[1, 1, 1, 1, 1], GgmlType::F32),
        Err(GgufError::BadTensorShape { .. })
    ));
    assert!(matches!(
        shape(&[4, 0], GgmlType::F32),
        Err(GgufError::BadTensorShape { .. })
    ));
    assert!(matches!(
        shape(&[33], GgmlType::Q4_0),
        Err(GgufError::BadTensorShape { .. })
    ));
    let e = shape(&[1 << 32, 1 << 32, 1 << 32], GgmlType::F32).unwrap_err();
    assert!(matches!(e, GgufError::BadTensorShape { .. }), "{e}");
    assert!(e.to_string().contains("overflow"), "{e}");
}

#[test]
fn bad_offsets() {
    // Data offset past the end of the file.
    let mut b = valid().to_bytes();
    let t = tensor_table_offset(&b);
    let off_at = t + 8 + 8 + 4 + 16 + 4;
    b[off_at..off_at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(parse(&b), Err(GgufError::TensorOutOfFile { .. })));
    // Offset so large that start + size overflows.
    b[off_at..off_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert!(matches!(parse(&b), Err(GgufError::TensorOutOfFile { .. })));
    // Misaligned offset.
    b[off_at..off_at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(matches!(
        parse(&b),
        Err(GgufError::TensorMisaligned { data_offset: 3, .. })
    ));
    // Two tensors sharing bytes.
    let b = GgufWriter::new()
        .tensor("a", &[64], GgmlType::F32, vec![0; 256])
        .tensor("b", &[4], GgmlType::F32, vec![0; 16])
        .to_bytes();
    let mut b2 = b.clone();
    let t = b.windows(1).position(|w| w == b"b").unwrap() - 8;
    let off_at = t + 8 + 1 + 4 + 8 + 4;
    b2[off_at..off_at + 8].copy_from_slice(&32u64.to_le_bytes());
    match parse(&b2) {
        Err(GgufError::TensorOverlap { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "b"))
        }
        other => panic!("{other:?}"),
    }
    // Truncated tensor data.
    let b = valid().to_bytes();
    assert!(matches!(
        parse(&b[..b.len() - 40]),
        Err(GgufError::TensorOutOfFile { .. })
    ));
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let b = valid().kv("general.alignment", Value::U32(a)).to_bytes();
        assert!(
            matches!(parse(&b), Err(GgufError::BadAlignment { .. })),
            "alignment {a}"
        );
    }
    let b = valid().kv("general.alignment", Value::U32(64)).to_bytes();
    let h = parse(&b).unwrap();
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
}

#[test]
fn errors_name_the_place() {
    let mut b = valid().to_bytes();
    b[16..24].copy_from_slice(&50_000u64.to_le_bytes());
    let msg = parse(&b).unwrap_err().to_string();
    assert!(msg.contains("byte 16"), "{msg}");
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn metadata_lookups() {
    let f = GgufFile::from_bytes(
        GgufWriter::new()
            .kv("u", Value::U32(7))
            .kv("neg", Value::I32(-1))
            .kv("f", Value::F32(0.5))
            .kv("s", Value::String("x".into()))
            .to_bytes(),
    )
    .unwrap();
    let m = f.metadata();
    assert_eq!(m.get_u32("u").unwrap(), 7);
    assert_eq!(m.get_f32("f").unwrap(), 0.5);
    assert!(m.get_u32("neg").is_err());
    assert!(
        m.get_u32("s")
            .unwrap_err()
            .to_string()
            .contains("holds string")
    );
    assert_eq!(
        m.opt("missing", ember_gguf::Metadata::get_u32).unwrap(),
        None
    );
    assert!(m.opt("s", ember_gguf::Metadata::get_u32).is_err());
}

#[test]
fn fuzz_seeds_are_valid_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/gguf_parse");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1 + f.tensors().len();
    }
    assert!(n >= 5);
}
