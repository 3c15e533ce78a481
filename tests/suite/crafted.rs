//! Crafted files: checkpoints, weights and data whose headers lie. Each is refused with a
//! message naming the file, before a read or an allocation the file's real contents do not
//! bound. Those that could take all memory run in a child process under an address-space
//! limit, so a regression fails the test instead of the machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sapling::checkpoint;
use sapling::data::idx;
use sapling::train::{RunOptions, train};

use crate::common::{micro_config, temp_dir, write_idx};
use crate::lineage::edit_manifest;

/// `sapling ARGS` under a 4 GiB address-space limit (`prlimit --as`); returns (success, stderr).
fn sapling_limited(args: &[&str]) -> (bool, String) {
    let out = Command::new("prlimit")
        .arg(format!("--as={}", 4u64 << 30))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sapling"))
        .args(args)
        .output()
        .expect("prlimit (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("memory allocation") && out.status.code().is_some(),
        "the process ran out of memory or was killed: {:?}\n{stderr}",
        out.status
    );
    (out.status.success(), stderr)
}

/// A fresh `train` on the CPU that starts from `weights`, one step, into a temp folder.
fn train_from(weights: &Path, name: &str) -> (bool, String) {
    let out = temp_dir(name);
    let args = [
        "train",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--init-from",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    sapling_limited(&args)
}

fn trained(name: &str) -> PathBuf {
    let mut c = micro_config(name);
    c.train.steps = Some(2);
    c.train.checkpoint_every = 2;
    train(&c, RunOptions::default()).unwrap();
    checkpoint::list(&c.train.out).pop().unwrap()
}

#[test]
fn a_manifest_may_name_only_sapling_files() {
    let step = trained("manifest-names");
    for name in ["/dev/zero", "../../x", "model.bpk/../../../etc/passwd"] {
        let copy = temp_dir("manifest-names-copy").join("step-00000002");
        copy_dir(&step, &copy);
        edit_manifest(&copy, |files| {
            files[0]["name"] = name.into();
            files[0]["bytes"] = (1u64 << 40).into();
        });
        let err = checkpoint::load(&copy).expect_err(name).to_string();
        assert!(
            err.contains("not a file sapling writes") && err.contains("step-00000002"),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_checkpoint_file_is_read_only_as_long_as_its_manifest_and_model_allow() {
    let step = trained("manifest-sizes");
    // The manifest claims a terabyte for the model and the file is that long (sparse).
    let copy = temp_dir("manifest-sizes-copy").join("checkpoints/step-00000002");
    copy_dir(&step, &copy);
    edit_manifest(&copy, |files| {
        for f in files.iter_mut().filter(|f| f["name"] == "model.bpk") {
            f["bytes"] = (1u64 << 40).into();
        }
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(copy.join("model.bpk"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let (ok, stderr) =
        sapling_limited(&["train", "--resume", copy.to_str().unwrap(), "--steps", "3"]);
    assert!(
        !ok && stderr.contains("model.bpk") && stderr.contains("more than"),
        "{stderr}"
    );

    // A file shorter or longer than its manifest says is refused before it is read.
    let copy = temp_dir("manifest-length-copy").join("step-00000002");
    copy_dir(&step, &copy);
    let model = copy.join("model.bpk");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let err = checkpoint::load(&copy).expect_err("short").to_string();
    assert!(
        err.contains("model.bpk") && err.contains("truncated"),
        "{err}"
    );
}

/// A PyTorch ZIP checkpoint: `archive/data.pkl` and storages `archive/data/KEY`.
fn pth_zip(path: &Path, pickle: &[u8], storages: &[(&str, &[u8])], deflate: bool) {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = SimpleFileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), options)
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("archive/version", options).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

#[test]
fn a_pickle_bomb_is_refused_before_it_is_parsed() {
    // 100 MB of NONE opcodes after a MARK: a ~100 KB file whose pickle pushes 10^8 objects.
    let mut pickle = b"\x80\x02(".to_vec();
    pickle.resize(100_000_000, b'N');
    pickle.extend_from_slice(b"t.");
    let path = temp_dir("pickle-bomb").join("bomb.pth");
    pth_zip(&path, &pickle, &[], true);
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let (ok, stderr) = train_from(&path, "pickle-bomb-out");
    assert!(
        !ok && stderr.contains("bomb.pth") && stderr.contains("data.pkl"),
        "{stderr}"
    );
}

/// A protocol-2 pickle of a dict of tensors, each `(name, shape, stride)` viewing one float of
/// storage `"0"` (stride 0: PyTorch's `expand`).
fn expanded_tensors(tensors: &[(&str, &[u32], &[u32])]) -> Vec<u8> {
    let text = |s: &str| {
        let mut v = vec![b'X'];
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    };
    let int = |n: u32| {
        let mut v = vec![b'J'];
        v.extend_from_slice(&n.to_le_bytes());
        v
    };
    let tuple = |items: &[u32]| {
        let mut v = vec![b'('];
        for &i in items {
            v.extend(int(i));
        }
        v.push(b't');
        v
    };
    let mut p = b"\x80\x02}(".to_vec();
    for (name, shape, stride) in tensors {
        p.extend(text(name));
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.extend_from_slice(b"(");
        p.extend(text("storage"));
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        p.extend(text("0"));
        p.extend(text("cpu"));
        p.extend(int(1));
        p.extend_from_slice(b"tQ");
        p.extend(int(0));
        p.extend(tuple(shape));
        p.extend(tuple(stride));
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)Rt");
        p.push(b'R');
    }
    p.extend_from_slice(b"u.");
    p
}

#[test]
fn an_expanded_tensor_is_checked_by_shape_before_its_values_are_read() {
    // A 1 KB file claiming a 4 GiB position table (and a patch embedding as wide).
    let pickle = expanded_tensors(&[
        ("patch_embed.proj.weight", &[16384, 3, 8, 8], &[0, 0, 0, 0]),
        ("pos_embed", &[1, 65537, 16384], &[0, 0, 0]),
    ]);
    let path = temp_dir("expanded").join("expanded.pth");
    pth_zip(&path, &pickle, &[("0", &1.0f32.to_le_bytes())], false);
    let (ok, stderr) = train_from(&path, "expanded-out");
    assert!(
        !ok && stderr.contains("expanded.pth") && stderr.contains("pos_embed"),
        "{stderr}"
    );
}

/// A safetensors file of `header` (the JSON) whose data part is `data_len` bytes (sparse).
fn safetensors_file(path: &Path, header: &str, data_len: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    file.set_len(8 + header.len() as u64 + data_len).unwrap();
}

#[test]
fn a_safetensors_file_is_checked_against_its_length_before_it_is_read() {
    let dir = temp_dir("safetensors-lengths");
    // A valid header over 51 GB of (sparse) data: nothing but the header is read.
    let big = 16384u64 * 3 * 512 * 512;
    let header = format!(
        "{{\"patch_embed.proj.weight\":{{\"dtype\":\"F32\",\"shape\":[16384,3,512,512],\"data_offsets\":[0,{}]}}}}",
        big * 4
    );
    let path = dir.join("huge.safetensors");
    safetensors_file(&path, &header, big * 4);
    let (ok, stderr) = train_from(&path, "huge-out");
    assert!(!ok && stderr.contains("huge.safetensors"), "{stderr}");

    // A header whose tensor runs past the end of the file.
    let path = dir.join("short.safetensors");
    safetensors_file(&path, &header, 1024);
    let (ok, stderr) = train_from(&path, "short-out");
    assert!(
        !ok && stderr.contains("short.safetensors") && stderr.contains("file holds"),
        "{stderr}"
    );

    // A header length past the file's.
    let path = dir.join("header.safetensors");
    let mut bytes = (u64::MAX / 2).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, bytes).unwrap();
    let (ok, stderr) = train_from(&path, "header-out");
    assert!(!ok && stderr.contains("header.safetensors"), "{stderr}");
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let c = micro_config("nan-weights");
    let exported = temp_dir("nan-weights-file").join("w.safetensors");
    let model = sapling::model::MaskedAutoencoder::new(&c.model, &crate::common::flex());
    sapling::model::init::materialize(&model);
    sapling::export::write_encoder(&model, "micro", &exported).unwrap();
    // Put a NaN into the first value of `norm.weight`.
    let bytes = std::fs::read(&exported).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header["norm.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let mut bytes = bytes;
    bytes[8 + n + start..8 + n + start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&exported, bytes).unwrap();
    let mut run = c.clone();
    run.train.init_from = Some(exported.clone());
    let err = train(&run, RunOptions::default())
        .expect_err("NaN")
        .to_string();
    assert!(
        err.contains("`norm.weight`") && err.contains("non-finite"),
        "{err}"
    );
}

#[test]
fn an_idx_header_claiming_more_than_its_file_holds_is_refused_unread() {
    let dir = temp_dir("idx-claims");
    // 10^8 images of 28 x 28 in a gzip file of a few dozen bytes.
    write_idx(
        &dir.join("train-images-idx3-ubyte.gz"),
        idx::IMAGES_MAGIC,
        &[100_000_000, 28, 28],
        &[0; 16],
    );
    write_idx(
        &dir.join("train-labels-idx1-ubyte.gz"),
        idx::LABELS_MAGIC,
        &[100_000_000],
        &[0; 16],
    );
    let out = temp_dir("idx-claims-out");
    let (ok, stderr) = sapling_limited(&[
        "train",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--data",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("train-images-idx3-ubyte.gz"),
        "{stderr}"
    );
}

#[test]
fn a_config_whose_sizes_multiply_past_any_tensor_is_refused_by_name() {
    let mut c = micro_config("config-products");
    c.model.img_size = 4096;
    c.model.patch_size = 1;
    let err = c.validate().expect_err("16.7 M tokens").to_string();
    assert!(
        err.contains("model.patch_size") && err.contains("patches per image"),
        "{err}"
    );
    let mut c = micro_config("config-products-width");
    c.model.dim = 16384;
    c.model.heads = 16;
    c.model.mlp_ratio = 64;
    let err = c.validate().expect_err("2^34 values").to_string();
    assert!(err.contains("encoder MLP weight"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
