//! Which shard files a `--data` value names: a brace pattern (`train-{000000..001023}.tar`,
//! `{a,b}.tar`), a folder whose top level holds `.tar` files, or one `.tar` file.

use std::path::{Path, PathBuf};

use crate::error::{Result, SaplingError};

/// Most files one pattern may name: ImageNet-22k at 1 GiB a shard is about 1,400; a pattern
/// that expands past this is a typo (`{0..99999999}`), refused before the list is built.
pub const MAX_SHARDS: usize = 1 << 20;

/// Whether `data` names shards rather than an image folder or IDX files.
pub fn names_shards(data: &Path) -> bool {
    let text = data.to_string_lossy();
    if text.contains('{') || has_tar_extension(data) {
        return true;
    }
    data.is_dir() && tars_in(data).is_ok_and(|tars| !tars.is_empty())
}

/// The shard files `data` names, in the order written (a folder's sorted by name); each must
/// exist and be a file.
pub fn resolve(data: &Path) -> Result<Vec<PathBuf>> {
    let text = data.to_string_lossy();
    let files = if text.contains('{') {
        let files: Vec<PathBuf> = expand(&text)
            .map_err(|message| SaplingError::data(data, message))?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let missing: Vec<&PathBuf> = files.iter().filter(|f| !f.is_file()).collect();
        if missing.len() == files.len() {
            return Err(SaplingError::data(
                data,
                format!(
                    "the pattern names {} files and none of them exists (the first: {}); check \
                     the folder and the numbers in braces",
                    files.len(),
                    files[0].display()
                ),
            ));
        }
        if let Some(first) = missing.first() {
            return Err(SaplingError::data(
                data,
                format!(
                    "{} of the {} files the pattern names do not exist, {} the first; fix the \
                     pattern or restore the shards",
                    missing.len(),
                    files.len(),
                    first.display()
                ),
            ));
        }
        files
    } else if data.is_dir() {
        let tars =
            tars_in(data).map_err(|e| SaplingError::data(data, format!("cannot list: {e}")))?;
        if tars.is_empty() {
            return Err(SaplingError::data(
                data,
                "is a folder without .tar files at its top level; pass a folder of shards,                  a .tar file, or a pattern",
            ));
        }
        tars
    } else if data.is_file() {
        vec![data.to_path_buf()]
    } else {
        return Err(SaplingError::data(
            data,
            "does not exist; pass a .tar shard, a folder of them, or a pattern such as \
             'shards/train-{000000..000099}.tar'",
        ));
    };
    Ok(files)
}

/// Expands every brace group of `pattern`: `{A..B}` counts from A to B (keeping A's width when it
/// has leading zeros, as WebDataset's braceexpand does), `{x,y,z}` lists alternatives.
pub fn expand(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("the brace at byte {open} is never closed"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let tails = expand(tail)?;
    let mut out = Vec::new();
    for choice in alternatives(body)? {
        for t in &tails {
            if out.len() == MAX_SHARDS {
                return Err(format!("names more than {MAX_SHARDS} files"));
            }
            out.push(format!("{head}{choice}{t}"));
        }
    }
    Ok(out)
}

/// The choices of one brace group's body.
fn alternatives(body: &str) -> std::result::Result<Vec<String>, String> {
    if let Some((lo, hi)) = body.split_once("..") {
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("`{{{body}}}`: `{s}` is not a whole number"))
        };
        let (a, b) = (parse(lo)?, parse(hi)?);
        if a > b {
            return Err(format!(
                "`{{{body}}}` counts down; write the smaller number first"
            ));
        }
        if b - a >= MAX_SHARDS as u64 {
            return Err(format!("`{{{body}}}` names more than {MAX_SHARDS} files"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        return Ok((a..=b).map(|n| format!("{n:0width$}")).collect());
    }
    if body.contains('{') {
        return Err(format!(
            "`{{{body}`: braces inside braces are not supported"
        ));
    }
    Ok(body.split(',').map(str::to_string).collect())
}

/// The `.tar` files at the top level of `dir`, sorted.
fn tars_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut tars = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && has_tar_extension(&path) {
            tars.push(path);
        }
    }
    tars.sort();
    Ok(tars)
}

fn has_tar_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_keep_their_width_and_lists_expand_in_order() {
        assert_eq!(
            expand("s/train-{000..002}.tar").unwrap(),
            ["s/train-000.tar", "s/train-001.tar", "s/train-002.tar"]
        );
        assert_eq!(expand("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(
            expand("{a,b}-{0..1}.tar").unwrap(),
            ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
        );
        assert_eq!(expand("plain.tar").unwrap(), ["plain.tar"]);
    }

    #[test]
    fn bad_patterns_are_refused_with_what_is_wrong() {
        assert!(expand("x-{0..").unwrap_err().contains("never closed"));
        assert!(expand("{5..1}").unwrap_err().contains("counts down"));
        assert!(expand("{a..b}").unwrap_err().contains("not a whole number"));
        assert!(expand("{0..99999999}").unwrap_err().contains("more than"));
    }
}
