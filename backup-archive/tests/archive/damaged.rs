//! Damaged and unexpected input: corrupt and truncated streams, unsupported
//! entries, visitor and input errors.

use super::*;

#[test]
fn corrupt_gzip_is_an_error() {
    let items = sample_items();
    let format = TarFormat::new(Compression::Gzip, None).unwrap();
    let packed = pack(&format, &items);
    for at in [packed.len() / 2, packed.len() / 3, packed.len() - 6, 20] {
        let mut bad = packed.clone();
        bad[at] ^= 0x55;
        let err = unpack(&format, bad).unwrap_err();
        let kind = io_kind(&err);
        assert!(
            matches!(
                kind,
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "flip at {at}: {err:?}"
        );
    }
}

#[test]
fn corrupt_zstd_is_an_error() {
    let items = sample_items();
    let format = TarFormat::new(Compression::Zstd, None).unwrap();
    let mut bad = pack(&format, &items);
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let err = unpack(&format, bad).unwrap_err();
    assert!(matches!(
        io_kind(&err),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    ));
}

#[test]
fn truncated_streams_are_errors() {
    let items = sample_items();
    for format in formats() {
        let packed = pack(&format, &items);
        let mut cuts = vec![0, 7, packed.len() / 2, packed.len() - 1];
        if format.compression() == Compression::None {
            // Exactly at entry boundaries: before the trailer, and inside it.
            cuts.extend([packed.len() - 1024, packed.len() - 512]);
        } else {
            cuts.extend([packed.len() - 4, packed.len() - 8]);
        }
        for cut in cuts {
            let Err(err) = unpack(&format, packed[..cut].to_vec()) else {
                panic!(
                    "{:?} cut at {cut} of {} unpacked fine",
                    format.compression(),
                    packed.len()
                );
            };
            assert!(
                matches!(
                    io_kind(&err),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "{err:?}"
            );
        }
    }
}

#[test]
fn unknown_entry_type_is_rejected() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Char);
    header.set_size(0);
    header.set_mode(0o600);
    builder
        .append_data(&mut header, "dev/tty0", io::empty())
        .unwrap();
    let data = builder.into_inner().unwrap();
    let format = TarFormat::new(Compression::None, None).unwrap();
    let err = unpack(&format, data).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidData);
    let chain = format!("{err:?}");
    assert!(chain.contains("entry type Char"), "{chain}");
}

#[test]
fn non_utf8_path_is_rejected() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.as_old_mut().name[..3].copy_from_slice(b"a\xffb");
    header.set_cksum();
    builder.append(&header, io::empty()).unwrap();
    let data = builder.into_inner().unwrap();
    let format = TarFormat::new(Compression::None, None).unwrap();
    let err = unpack(&format, data).unwrap_err();
    assert_eq!(io_kind(&err), io::ErrorKind::InvalidData);
}

#[test]
fn visitor_error_stops_unpack_and_is_returned() {
    let items = sample_items();
    for format in formats() {
        let packed = pack(&format, &items);
        // An endless input: the decompressor thread only stops because the
        // reader side goes away.
        let input: Box<dyn Read + Send> = if format.compression() == Compression::None {
            Box::new(Cursor::new(packed).chain(io::repeat(0)))
        } else {
            Box::new(Cursor::new(packed))
        };
        let mut calls = 0;
        let err = format
            .unpack(input, &mut |_, _| {
                calls += 1;
                if calls == 4 {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err:?}");
        assert_eq!(calls, 4);
    }
}

#[test]
fn input_read_errors_keep_their_kind() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer gone"))
        }
    }
    for format in formats() {
        let err = unpack_from(&format, Box::new(Failing)).unwrap_err();
        assert_eq!(io_kind(&err), io::ErrorKind::ConnectionReset);
        assert!(err.is_retryable());
    }
}
