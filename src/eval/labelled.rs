//! Labelled images to evaluate features on: a split of an IDX data set (Fashion-MNIST), or an
//! image folder in the layout torchvision's `ImageFolder` reads (`DIR/train/CLASS/*.jpg` and
//! `DIR/val/CLASS/*.jpg`, or `test/`), the layout ImageNet is kept in.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::data::idx::{self, IdxSplit};
use crate::data::source::decode_file;
use crate::error::{Result, SaplingError};

/// One split's images and labels.
pub enum Split {
    Idx(IdxSplit),
    /// Files with their class index; `classes` names them (sorted, as `ImageFolder` does).
    Folder {
        files: Vec<(PathBuf, usize)>,
        classes: Vec<String>,
    },
}

impl Split {
    pub fn len(&self) -> usize {
        match self {
            Split::Idx(s) => s.images.count,
            Split::Folder { files, .. } => files.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as RGB; a file that does not decode is an error naming it.
    pub fn image(&self, i: usize) -> Result<RgbImage> {
        match self {
            Split::Idx(s) => Ok(s.images.rgb(i)),
            Split::Folder { files, .. } => {
                decode_file(&files[i].0).map_err(|message| SaplingError::Data {
                    path: files[i].0.clone(),
                    message,
                })
            }
        }
    }

    /// The class of image `i`.
    pub fn label(&self, i: usize) -> usize {
        match self {
            Split::Idx(s) => usize::from(s.labels[i]),
            Split::Folder { files, .. } => files[i].1,
        }
    }

    /// The number of classes (the largest label plus one for IDX).
    pub fn classes(&self) -> usize {
        match self {
            Split::Idx(s) => s
                .labels
                .iter()
                .copied()
                .max()
                .map_or(0, |m| usize::from(m) + 1),
            Split::Folder { classes, .. } => classes.len(),
        }
    }
}

/// Refuses an evaluation of no images: `--train-limit` and `--test-limit` of 0.
pub fn check_limits(train_limit: usize, test_limit: usize) -> Result<()> {
    for (field, n) in [("train_limit", train_limit), ("test_limit", test_limit)] {
        if n == 0 {
            let flag = field.replace('_', "-");
            return Err(SaplingError::config(
                field,
                format!("--{flag} must be 1 or more"),
            ));
        }
    }
    Ok(())
}

/// The training and test splits of the data set in `dir`: IDX (`train` and `t10k`), or an image
/// folder with `train/` and `val/` (or `test/`) sub-folders of one folder per class.
pub fn train_and_test(dir: &Path) -> Result<(Split, Split)> {
    if idx::find(dir, "train-images-idx3-ubyte").is_some() {
        return Ok((
            Split::Idx(idx::read_split(dir, "train")?),
            Split::Idx(idx::read_split(dir, "t10k")?),
        ));
    }
    let test_dir = ["val", "test"]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_dir());
    let (Some(test_dir), true) = (test_dir, dir.join("train").is_dir()) else {
        return Err(SaplingError::Data {
            path: dir.to_path_buf(),
            message: "is neither an IDX data set (train-images-idx3-ubyte …) nor an image folder \
                      with train/ and val/ (or test/) holding one folder per class"
                .into(),
        });
    };
    let train = folder_split(&dir.join("train"), None)?;
    let Split::Folder { classes, .. } = &train else {
        unreachable!("a folder split")
    };
    let test = folder_split(&test_dir, Some(classes))?;
    Ok((train, test))
}

/// The images under `root/CLASS/`, labelled by their class folder's place among `classes` (the
/// training split's) or among `root`'s own sorted sub-folders.
fn folder_split(root: &Path, classes: Option<&Vec<String>>) -> Result<Split> {
    let err = |message: String| SaplingError::Data {
        path: root.to_path_buf(),
        message,
    };
    let mut found: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| err(format!("cannot list: {e}")))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    let classes = classes.cloned().unwrap_or(found.clone());
    if classes.len() < 2 {
        return Err(err("needs at least two class folders to classify".into()));
    }
    let mut files = Vec::new();
    for name in &found {
        let label = classes.iter().position(|c| c == name).ok_or_else(|| {
            err(format!(
                "has a class `{name}` the training split does not have"
            ))
        })?;
        let source = crate::data::ImageSource::folder(&root.join(name))?;
        let crate::data::ImageSource::Folder { files: images, .. } = source else {
            return Err(err(format!("`{name}` holds an IDX data set, not images")));
        };
        files.extend(images.into_iter().map(|f| (f, label)));
    }
    Ok(Split::Folder { files, classes })
}
