//! Image sources, bad input, deterministic loading.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use sapling::config::DataConfig;
use sapling::data::source::{MAX_IMAGE_SIDE, decode_file};
use sapling::data::{ImageSource, Loader, Shard, Stream, idx};

use crate::common::{micro_config, temp_dir};

fn config(workers: usize) -> DataConfig {
    DataConfig {
        workers,
        ..DataConfig::default()
    }
}

#[test]
fn embedded_photos_decode() {
    let source = ImageSource::new(None).unwrap();
    assert!(source.len() >= 10);
    for i in 0..source.len() {
        let img = source
            .load(i)
            .unwrap_or_else(|e| panic!("{}: {e}", source.name(i)));
        assert!(
            img.width() >= 64 && img.height() >= 64,
            "{}",
            source.name(i)
        );
    }
}

#[test]
fn missing_and_empty_folders_are_clear_errors() {
    let err = ImageSource::new(Some("/nonexistent/images".as_ref()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/images") && err.contains("does not exist"),
        "{err}"
    );
    let empty = temp_dir("empty");
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    let err = ImageSource::new(Some(&empty)).unwrap_err().to_string();
    assert!(
        err.contains("no images") && err.contains(&empty.display().to_string()),
        "{err}"
    );
}

#[test]
fn folders_are_searched_recursively_and_broken_files_skipped_once() {
    let dir = temp_dir("folder");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    image::RgbaImage::from_pixel(40, 30, image::Rgba([10, 200, 30, 128]))
        .save(dir.join("a/b/rgba.png"))
        .unwrap();
    image::GrayImage::from_pixel(50, 50, image::Luma([90]))
        .save(dir.join("grey.PNG"))
        .unwrap();
    std::fs::write(dir.join("a/broken.jpg"), b"not a jpeg").unwrap();
    let source = ImageSource::new(Some(&dir)).unwrap();
    assert_eq!(source.len(), 3);
    let mut loader = Loader::new(source, &config(1), 16, 6, 0, 0);
    for _ in 0..3 {
        let batch = loader.next_batch().unwrap();
        assert_eq!(batch.images.len(), 6 * 3 * 16 * 16);
        assert!(batch.images.iter().all(|v| v.is_finite()));
    }
    assert_eq!(loader.skipped(), 1);
}

#[test]
fn loading_is_deterministic_whatever_the_worker_count() {
    let batches = |workers, seed| {
        let mut l = Loader::new(ImageSource::Embedded, &config(workers), 32, 5, seed, 0);
        (0..6)
            .map(|_| l.next_batch().unwrap().images)
            .collect::<Vec<_>>()
    };
    let one = batches(1, 3);
    assert_eq!(one, batches(3, 3));
    assert_ne!(one, batches(1, 4));
    assert_ne!(one[0], one[1]);
    // Starting mid-stream (at sample 20) gives the same batches as reading up to there.
    let mut late = Loader::new(ImageSource::Embedded, &config(2), 32, 5, 3, 4 * 5);
    assert_eq!(late.next_batch().unwrap().images, one[4]);
}

// ---- Bad input: IDX files -------------------------------------------------------------------

/// An IDX file: `magic`, `dims`, then `body`; gzip-compressed when `gzip`.
fn write_idx(path: &Path, magic: u32, dims: &[u32], body: &[u8], gzip: bool) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(body);
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        bytes = enc.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// The error reading `path` as IDX images, checked to name the file.
fn idx_error(path: &Path) -> String {
    let err = idx::read_images(path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

#[test]
fn idx_dimensions_that_overflow_are_refused_by_name() {
    let path = temp_dir("idx-overflow").join("train-images-idx3-ubyte");
    write_idx(&path, idx::IMAGES_MAGIC, &[u32::MAX; 3], &[0; 64], false);
    let err = idx_error(&path);
    assert!(err.contains("multiply past"), "{err}");
}

#[test]
fn idx_bodies_longer_than_their_header_are_refused_unread() {
    let dir = temp_dir("idx-long");
    // 64 MiB of zeros behind a header that promises 4 bytes: gzip shrinks it to ~64 KiB, and
    // the reader stops one byte past the promise instead of inflating it all.
    let bomb = vec![0u8; 64 << 20];
    for gzip in [true, false] {
        let path = dir.join(format!("long-{gzip}"));
        write_idx(
            &path,
            idx::IMAGES_MAGIC,
            &[1, 2, 2],
            &bomb[..if gzip { bomb.len() } else { 5 }],
            gzip,
        );
        let err = idx_error(&path);
        assert!(err.contains("more data than the 4 bytes"), "{err}");
    }
}

#[test]
fn idx_files_with_no_images_or_empty_images_are_refused_by_name() {
    let dir = temp_dir("idx-empty");
    let path = dir.join("none");
    write_idx(&path, idx::IMAGES_MAGIC, &[0, 28, 28], &[], true);
    let err = idx_error(&path);
    assert!(err.contains("holds no images"), "{err}");
    let path = dir.join("flat");
    write_idx(&path, idx::IMAGES_MAGIC, &[3, 0, 28], &[], false);
    let err = idx_error(&path);
    assert!(err.contains("each side must be 1 to"), "{err}");
    let labels = dir.join("labels");
    write_idx(&labels, idx::LABELS_MAGIC, &[0], &[], false);
    let err = idx::read_labels(&labels).unwrap_err().to_string();
    assert!(
        err.contains("holds no labels") && err.contains("labels"),
        "{err}"
    );
}

#[test]
fn truncated_idx_files_are_refused_by_name() {
    let dir = temp_dir("idx-short");
    let raw = dir.join("raw");
    write_idx(&raw, idx::IMAGES_MAGIC, &[2, 28, 28], &[7; 100], false);
    let err = idx_error(&raw);
    assert!(
        err.contains("truncated: 100 data bytes") && err.contains("1568"),
        "{err}"
    );
    // A gzip stream cut in half (noisy pixels, so the cut falls in the body).
    let gz = dir.join("cut.gz");
    let noise: Vec<u8> = (0..1568u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_idx(&gz, idx::IMAGES_MAGIC, &[2, 28, 28], &noise, true);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let err = idx_error(&gz);
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
    // A header cut short.
    let stub = dir.join("stub");
    std::fs::write(&stub, [0, 0, 8, 3, 0, 0]).unwrap();
    let err = idx_error(&stub);
    assert!(err.contains("header is cut short"), "{err}");
}

// ---- Bad input: image folders ---------------------------------------------------------------

/// A small valid PNG.
fn png(path: &Path) {
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 10, 10]))
        .save(path)
        .unwrap();
}

/// CRC-32 as PNG chunks use it (bitwise; the test needs a few dozen bytes).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PNG whose header (with a correct CRC) claims `width` x `height` pixels.
fn png_claiming(path: &Path, width: u32, height: u32) {
    png(path);
    let mut bytes = std::fs::read(path).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more fields, CRC.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Whether this process reads files whatever their mode (root): chmod 000 then proves nothing.
fn reads_anything(probe: &Path) -> bool {
    std::fs::read(probe).is_ok()
}

#[test]
fn folder_scan_skips_dangling_links_loops_and_unreadable_entries() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = temp_dir("folder-bad-entries");
    png(&dir.join("good.png"));
    symlink(dir.join("missing.png"), dir.join("dangling.png")).unwrap();
    symlink(&dir, dir.join("loop")).unwrap();
    std::fs::create_dir(dir.join("locked")).unwrap();
    png(&dir.join("locked/hidden.png"));
    png(&dir.join("secret.png"));
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&dir.join("secret.png"), 0o000);
    mode(&dir.join("locked"), 0o000);
    // Under root the chmod-ed entries stay readable and count as good images.
    let root = reads_anything(&dir.join("secret.png"));

    let source = ImageSource::new(Some(&dir));
    mode(&dir.join("locked"), 0o755);
    let source = source.unwrap();
    // good.png, secret.png, and locked/hidden.png only where the folder could be listed.
    assert_eq!(
        source.len(),
        if root { 3 } else { 2 },
        "{}",
        source.describe()
    );
    let mut loader = Loader::new(source, &config(1), 16, 4, 0, 0);
    loader.next_batch().unwrap();
    assert_eq!(loader.skipped(), if root { 0 } else { 1 });
    drop(loader);
    mode(&dir.join("secret.png"), 0o644);
}

#[test]
fn images_past_the_decode_limits_are_skipped_by_name_before_allocating() {
    let dir = temp_dir("folder-huge");
    png(&dir.join("good.png"));
    // 100000 x 100000 RGB would be 28 GiB: the limits refuse it from the header alone.
    let huge = dir.join("huge.png");
    png_claiming(&huge, 100_000, 100_000);
    let err = decode_file(&huge).unwrap_err();
    assert!(err.contains("larger than sapling decodes"), "{err}");
    let source = ImageSource::new(Some(&dir)).unwrap();
    assert_eq!(source.len(), 2);
    let mut loader = Loader::new(source, &config(1), 16, 4, 0, 0);
    loader.next_batch().unwrap();
    assert_eq!(loader.skipped(), 1);
    // Just inside the side limit but past the allocation limit: refused too.
    png_claiming(&huge, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE);
    let err = decode_file(&huge).unwrap_err();
    assert!(err.contains("larger than sapling decodes"), "{err}");
}

#[test]
fn non_utf8_names_are_read_and_a_non_utf8_data_dir_is_refused_by_field() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
    let dir = temp_dir("non-utf8").join(bad);
    std::fs::create_dir_all(&dir).unwrap();
    png(&dir.join(std::ffi::OsStr::from_bytes(b"photo\xfe.png")));
    // The data pipeline itself takes any file name...
    let source = ImageSource::new(Some(&dir)).unwrap();
    assert_eq!(source.len(), 1);
    source.load(0).unwrap();
    // ...but a run records its config as TOML, which holds UTF-8 only.
    let mut c = micro_config("non-utf8-run");
    c.data.dir = Some(dir);
    let err = sapling::train::train(&c, Default::default())
        .expect_err("a non-UTF-8 data.dir is refused")
        .to_string();
    assert!(err.contains("data.dir") && err.contains("UTF-8"), "{err}");
}

#[test]
fn images_added_to_a_stream_are_not_copied() {
    let first = image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]));
    let source = ImageSource::decoded(vec![("a".into(), first)]).unwrap();
    let mut stream = Stream::new(Arc::new(source), &config(1), 16, 2, 0, Shard::WHOLE);
    let pixels = |s: &Stream| match s.source().as_ref() {
        ImageSource::Decoded(images) => images[0].1.as_ptr(),
        _ => unreachable!(),
    };
    let before = pixels(&stream);
    stream.batch(0).unwrap();
    let added = image::RgbImage::from_pixel(40, 20, image::Rgb([9, 9, 9]));
    assert_eq!(stream.push_image("b".into(), added).unwrap(), 2);
    assert_eq!(
        pixels(&stream),
        before,
        "the first image's pixels were copied"
    );
    stream.batch(1).unwrap();
    let err = Stream::new(
        Arc::new(ImageSource::Embedded),
        &config(1),
        16,
        2,
        0,
        Shard::WHOLE,
    )
    .push_image("c".into(), image::RgbImage::new(4, 4))
    .unwrap_err()
    .to_string();
    assert!(err.contains("only images in memory"), "{err}");
}
