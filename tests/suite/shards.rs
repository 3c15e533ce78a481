//! WebDataset shards: reading, splitting over ranks, resuming from any position, the loader's
//! independence of its thread count, `sapling data pack`, and bad shards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sapling::config::{BatchSize, DataConfig};
use sapling::data::shards::pack::{PackOptions, pack};
use sapling::data::shards::{RankReader, ShardSet};
use sapling::data::{ImageSource, Loader, Shard};
use sapling::progress::Progress;

use crate::common::{micro_config, temp_dir, uninterrupted_and_resumed};

/// A small JPEG whose colour encodes `n`, so a sample can be told apart after decoding.
fn jpeg(n: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([
            (n * 37 % 256) as u8,
            (x * 9) as u8,
            (y as usize * 11 + n) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// Writes a tar of `(name, bytes)` members.
fn write_tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // Written raw: the tar crate refuses to write a `..` name, which a crafted shard has.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
    }
    builder.finish().unwrap();
}

/// Shards of `sizes[i]` samples each (`KEY.jpg` + `KEY.json`), keys numbered across shards;
/// returns the folder.
pub fn toy_shards(name: &str, sizes: &[usize]) -> PathBuf {
    let dir = temp_dir(name);
    let mut n = 0;
    for (s, &size) in sizes.iter().enumerate() {
        let mut members = Vec::new();
        for _ in 0..size {
            members.push((format!("{n:06}.jpg"), jpeg(n)));
            members.push((
                format!("{n:06}.json"),
                format!("{{\"n\": {n}}}").into_bytes(),
            ));
            n += 1;
        }
        write_tar(&dir.join(format!("part-{s:02}.tar")), &members);
    }
    dir
}

/// The keys `reader` gives from its `start`-th sample, `n` of them.
fn keys(reader: &RankReader, start: u64, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    reader
        .run(start, |s| {
            out.push(s.key);
            out.len() < n
        })
        .unwrap();
    out
}

#[test]
fn every_sample_is_read_once_per_epoch_over_the_ranks() {
    let sizes = [7, 3, 9, 5, 1, 6, 8];
    let total: usize = sizes.iter().sum();
    let set = Arc::new(ShardSet::open(&toy_shards("split", &sizes)).unwrap());
    assert_eq!(set.total as usize, total);
    let all: BTreeSet<String> = (0..total).map(|n| format!("{n:06}")).collect();
    for ranks in [1, 2, 3] {
        let mut seen_by_epoch: Vec<Vec<String>> = vec![Vec::new(); 3];
        for rank in 0..ranks {
            let reader = RankReader::new(set.clone(), 11, rank, ranks, 4);
            let mut at = 0;
            for (epoch, seen) in seen_by_epoch.iter_mut().enumerate() {
                let len: u64 = reader
                    .epoch_shards(epoch as u64)
                    .iter()
                    .map(|&s| set.files[s].samples)
                    .sum();
                let got = keys(&reader, at, len as usize);
                let distinct: BTreeSet<&String> = got.iter().collect();
                assert_eq!(
                    distinct.len(),
                    got.len(),
                    "rank {rank} of {ranks}, epoch {epoch}: a sample twice"
                );
                seen.extend(got);
                at += len;
            }
        }
        for (epoch, seen) in seen_by_epoch.iter().enumerate() {
            let got: BTreeSet<String> = seen.iter().cloned().collect();
            assert_eq!(got, all, "{ranks} ranks, epoch {epoch}");
            assert_eq!(seen.len(), total, "{ranks} ranks, epoch {epoch}");
        }
    }
    // Shuffled: not file order, and a different order each epoch.
    let reader = RankReader::new(set.clone(), 11, 0, 1, 4);
    let two = keys(&reader, 0, 2 * total);
    assert_ne!(two[..total], two[total..]);
    assert_ne!(
        two[..total].to_vec(),
        all.iter().cloned().collect::<Vec<_>>()
    );
}

#[test]
fn a_reader_started_anywhere_gives_what_the_whole_stream_gave_there() {
    let set = Arc::new(ShardSet::open(&toy_shards("replay", &[6, 4, 9, 2])).unwrap());
    // A buffer smaller than an epoch, and one larger (the whole epoch drains from it).
    for (ranks, capacity) in [(1, 5), (2, 5), (1, 100), (2, 100)] {
        let reader = RankReader::new(set.clone(), 5, ranks - 1, ranks, capacity);
        let whole = keys(&reader, 0, 60);
        for start in [1, 4, 5, 11, 19, 20, 21, 33, 47] {
            assert_eq!(
                keys(&reader, start as u64, 60 - start),
                whole[start..],
                "{ranks} ranks, buffer {capacity}, from sample {start}"
            );
        }
    }
}

fn pixels(loader: &mut Loader, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| loader.next_batch().unwrap().images)
        .collect()
}

#[test]
fn shard_batches_do_not_depend_on_the_worker_count_or_the_start() {
    let dir = toy_shards("loader", &[10, 7, 12]);
    let source = ImageSource::new(Some(&dir)).unwrap();
    assert!(
        matches!(source, ImageSource::Shards(_)),
        "a folder of .tar files is shards"
    );
    let data = |workers| DataConfig {
        workers,
        shuffle_buffer: 8,
        ..DataConfig::default()
    };
    let mut one = Loader::new(source.clone(), &data(1), 16, 4, 3, 0);
    let want = pixels(&mut one, 12);
    let mut three = Loader::new(source.clone(), &data(3), 16, 4, 3, 0);
    assert_eq!(pixels(&mut three, 12), want);
    let mut later = Loader::new(source.clone(), &data(2), 16, 4, 3, 5 * 4);
    assert_eq!(pixels(&mut later, 7), want[5..]);
    // Two ranks share micro-batches out: rank r's j-th is global micro-batch 2j + r.
    let rank = |r| {
        Loader::sharded(
            source.clone(),
            &data(2),
            16,
            4,
            3,
            0,
            Shard { rank: r, size: 2 },
        )
    };
    let (a, b) = (pixels(&mut rank(0), 3), pixels(&mut rank(1), 3));
    assert_ne!(a, b);
}

#[test]
fn a_run_killed_on_shards_resumes_with_the_same_losses() {
    const TOTAL: u64 = 300;
    let dir = temp_dir("shard-kill");
    let data = toy_shards("shard-kill-data", &[9, 5, 11]);
    let mut c = micro_config("shard-kill-cfg");
    c.train.steps = Some(TOTAL);
    c.train.batch_size = BatchSize::Fixed(4);
    c.train.effective_batch = 4;
    c.train.log_every = 1;
    c.train.checkpoint_every = 20;
    c.train.recon_every = 0;
    c.data.shuffle_buffer = 8;
    c.data.dir = Some(data.join("part-{00..02}.tar"));
    let toml = dir.join("run.toml");
    std::fs::write(&toml, c.to_toml()).unwrap();
    let (want, got) = uninterrupted_and_resumed(&toml, &dir, 100, &[]);
    assert_eq!(want.len() as u64, TOTAL);
    assert_eq!(got, want, "losses after the resume");
}

/// Why one rank's reader (of one, shuffle buffer `capacity`) stopped reading `set`.
fn read_error(set: Arc<ShardSet>, capacity: usize) -> String {
    RankReader::new(set, 0, 0, 1, capacity)
        .run(0, |_| true)
        .unwrap_err()
        .to_string()
}

fn pack_options(out: &Path, workers: usize) -> PackOptions {
    PackOptions {
        out: out.to_path_buf(),
        shard_size: 1 << 20,
        max_side: 64,
        quality: 90,
        workers,
        overwrite: false,
    }
}

#[test]
fn pack_is_deterministic_and_its_shards_train() {
    let dir = temp_dir("pack");
    let source = ImageSource::new(None).unwrap();
    let a = pack(
        &source,
        &pack_options(&dir.join("a"), 1),
        Progress::hidden(),
    )
    .unwrap();
    let b = pack(
        &source,
        &pack_options(&dir.join("b"), 2),
        Progress::hidden(),
    )
    .unwrap();
    assert_eq!(a.images as usize, source.len());
    assert_eq!(a.shards, b.shards);
    for (name, _) in &a.shards {
        let (x, y) = (
            std::fs::read(dir.join("a").join(name)).unwrap(),
            std::fs::read(dir.join("b").join(name)).unwrap(),
        );
        assert!(
            x == y,
            "{name} differs between two packs of the same images"
        );
    }
    let sizes: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("a/sizes.json")).unwrap()).unwrap();
    assert_eq!(sizes.values().sum::<u64>(), a.images);
    // Every image shrunk to a short side of 64, and the set reads back whole.
    let set = ShardSet::open(&dir.join("a")).unwrap();
    assert_eq!(set.total, a.images);
    for img in set.first_images(3) {
        assert_eq!(img.width().min(img.height()), 64);
    }
    // A second pack into the same folder is refused, and --overwrite replaces only its files.
    let err = pack(
        &source,
        &pack_options(&dir.join("a"), 1),
        Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--overwrite"), "{err}");
    std::fs::write(dir.join("b/notes.txt"), "mine").unwrap();
    let mut again = pack_options(&dir.join("b"), 1);
    again.overwrite = true;
    let err = pack(&source, &again, Progress::hidden()).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("b/notes.txt")).unwrap(),
        "mine"
    );

    // An overwrite that fails puts the earlier pack back as it was.
    let before: Vec<Vec<u8>> = a
        .shards
        .iter()
        .map(|(n, _)| std::fs::read(dir.join("a").join(n)).unwrap())
        .collect();
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("x.jpg"), "not a jpeg").unwrap();
    let mut over = pack_options(&dir.join("a"), 1);
    over.overwrite = true;
    let err = pack(
        &ImageSource::folder(&broken).unwrap(),
        &over,
        Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("none of the images"), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(dir.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = a.shards.iter().map(|(n, _)| n.clone()).collect();
    want.push("sizes.json".into());
    assert_eq!(
        names, want,
        "only the earlier pack's files, nothing set aside"
    );
    for ((n, _), bytes) in a.shards.iter().zip(&before) {
        assert!(
            std::fs::read(dir.join("a").join(n)).unwrap() == *bytes,
            "{n} changed"
        );
    }
    assert!(ShardSet::open(&dir.join("a")).is_ok());

    let mut c = micro_config("pack-train");
    c.train.steps = Some(2);
    c.data.dir = Some(dir.join("a"));
    let summary = sapling::train::train(&c, sapling::train::RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 2);
    assert!(summary.losses.iter().all(|(_, l)| l.is_finite()));
}

/// The message of opening `spec` as shards.
fn refusal(spec: &Path) -> String {
    ShardSet::open(spec).unwrap_err().to_string()
}

#[test]
fn bad_shards_are_named_with_what_is_wrong() {
    let dir = toy_shards("bad", &[3, 2]);
    let err = refusal(&dir.join("nothing-{0..3}.tar"));
    assert!(
        err.contains("none of them exists") && err.contains("nothing-0.tar"),
        "{err}"
    );
    let err = refusal(&dir.join("part-{00..05}.tar"));
    assert!(
        err.contains("4 of the 6") && err.contains("part-02.tar"),
        "{err}"
    );
    let set = ShardSet::open(&dir).unwrap();
    let err = set.check_ranks(4).unwrap_err().to_string();
    assert!(err.contains("2 shards for 4 MPI ranks"), "{err}");

    // Truncated in the middle of a member: named when read.
    let whole = std::fs::read(dir.join("part-00.tar")).unwrap();
    let cut = temp_dir("bad-cut");
    std::fs::write(cut.join("cut.tar"), &whole[..whole.len() / 2]).unwrap();
    let err = refusal(&cut.join("cut.tar"));
    assert!(
        err.contains("cut.tar") && err.contains("truncated"),
        "{err}"
    );
    // Counted by a sizes.json instead, it is named when the reader reaches the cut.
    std::fs::write(cut.join("sizes.json"), r#"{"cut.tar": 3}"#).unwrap();
    let set = Arc::new(ShardSet::open(&cut.join("cut.tar")).unwrap());
    let err = read_error(set, 2);
    assert!(
        err.contains("cut.tar") && err.contains("truncated"),
        "{err}"
    );

    // A header claiming a terabyte: refused before anything is allocated.
    let huge = temp_dir("bad-huge");
    let mut header = tar::Header::new_ustar();
    header.set_path("000000.jpg").unwrap();
    header.set_size(1 << 40);
    header.set_mode(0o644);
    header.set_cksum();
    let mut file = std::fs::File::create(huge.join("huge.tar")).unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.write_all(&[0xFF; 4096]).unwrap();
    drop(file);
    std::fs::write(huge.join("sizes.json"), r#"{"huge.tar": 1}"#).unwrap();
    let set = Arc::new(ShardSet::open(&huge).unwrap());
    let err = read_error(set, 1);
    assert!(err.contains("huge.tar") && err.contains("claims"), "{err}");

    // A folder named like a shard holds none; a sizes.json count no file could hold; a pack
    // cut short.
    let odd = temp_dir("bad-odd");
    std::fs::create_dir_all(odd.join("looks.tar")).unwrap();
    let err = refusal(&odd.join("looks.tar"));
    assert!(err.contains("without .tar files"), "{err}");
    std::fs::write(
        dir.join("sizes.json"),
        r#"{"part-00.tar": 1000000, "part-01.tar": 2}"#,
    )
    .unwrap();
    let err = refusal(&dir);
    assert!(
        err.contains("part-00.tar") && err.contains("more than a file"),
        "{err}"
    );
    std::fs::remove_file(dir.join("sizes.json")).unwrap();
    std::fs::write(dir.join(".pack-incomplete"), "").unwrap();
    let err = refusal(&dir);
    assert!(
        err.contains("did not finish") && err.contains("--overwrite"),
        "{err}"
    );
    std::fs::remove_file(dir.join(".pack-incomplete")).unwrap();

    // An empty shard is left out with a warning; a set of nothing but empty shards is refused.
    let empty = temp_dir("bad-empty");
    write_tar(&empty.join("empty.tar"), &[]);
    let err = refusal(&empty);
    assert!(err.contains("none of the shards holds an image"), "{err}");
    write_tar(&empty.join("full.tar"), &[("a.jpg".into(), jpeg(1))]);
    assert_eq!(ShardSet::open(&empty).unwrap().files.len(), 1);

    // A sizes.json that disagrees with a shard is named when the shard is read.
    std::fs::write(
        dir.join("sizes.json"),
        r#"{"part-00.tar": 5, "part-01.tar": 2}"#,
    )
    .unwrap();
    let set = Arc::new(ShardSet::open(&dir).unwrap());
    let err = read_error(set, 2);
    assert!(
        err.contains("part-00.tar") && err.contains("sizes.json"),
        "{err}"
    );
}

#[test]
fn odd_members_are_skipped_and_names_never_become_paths() {
    let dir = temp_dir("odd");
    let members = vec![
        ("../../escape.jpg".to_string(), jpeg(1)),
        ("meta-only.json".to_string(), b"{}".to_vec()),
        ("broken.jpg".to_string(), b"not a jpeg".to_vec()),
        (
            "x/good.seg.png".to_string(),
            b"ignored: not the image member".to_vec(),
        ),
        ("x/good.jpg".to_string(), jpeg(2)),
    ];
    write_tar(&dir.join("odd.tar"), &members);
    let set = ShardSet::open(&dir.join("odd.tar")).unwrap();
    // The traversal name, the broken JPEG and x/good are samples; meta-only has no image.
    assert_eq!(set.total, 3);
    let source = ImageSource::Shards(Arc::new(set));
    let data = DataConfig {
        workers: 1,
        ..DataConfig::default()
    };
    let mut loader = Loader::new(source, &data, 16, 3, 0, 0);
    let batch = loader.next_batch().unwrap();
    assert_eq!(batch.batch, 3);
    assert!(batch.images.iter().all(|v| v.is_finite()));
    assert_eq!(
        loader.skipped(),
        1,
        "the broken JPEG, replaced within its micro-batch"
    );
    assert!(!dir.join("../../escape.jpg").exists() && !Path::new("escape.jpg").exists());
}

#[test]
fn idx_files_pack_with_their_labels() {
    let dir = temp_dir("pack-idx");
    crate::common::toy_idx(&dir, "train", 10);
    let source = ImageSource::folder(&dir).unwrap();
    let summary = pack(
        &source,
        &pack_options(&dir.join("out"), 2),
        Progress::hidden(),
    )
    .unwrap();
    assert_eq!((summary.images, summary.encoded), (10, 10));
    let shard = dir.join("out").join(&summary.shards[0].0);
    let mut archive = tar::Archive::new(std::fs::File::open(&shard).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        names[..3],
        ["000000000.jpg", "000000000.json", "000000000.cls"]
    );
    assert_eq!(ShardSet::open(&dir.join("out")).unwrap().total, 10);
}
