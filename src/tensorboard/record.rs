//! TFRecord framing: each record is its length (u64, little-endian), the masked CRC-32C of
//! those 8 bytes, the data, and the masked CRC-32C of the data.

/// TensorFlow's CRC mask: rotate right by 15 and add a constant, so a CRC stored inside data
/// that is itself CRC'd does not make a CRC of a CRC.
fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn crc(bytes: &[u8]) -> u32 {
    masked(crc32c::crc32c(bytes))
}

/// `data` as one record.
pub(super) fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc(data).to_le_bytes());
    out
}

/// What is wrong with an event file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {0}: cut short")]
    Truncated(usize),
    #[error("record {0}: its length does not match its CRC")]
    LengthCrc(usize),
    #[error("record {0}: its data do not match their CRC")]
    DataCrc(usize),
    #[error("a record holds no event sapling reads")]
    NotAnEvent,
}

/// The records of `bytes`, every CRC checked.
pub fn read_records(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let i = out.len();
        let word = |b: &[u8], at: usize| -> Result<u32, RecordError> {
            let w = b.get(at..at + 4).ok_or(RecordError::Truncated(i))?;
            Ok(u32::from_le_bytes(w.try_into().expect("4 bytes")))
        };
        let len_bytes = bytes.get(..8).ok_or(RecordError::Truncated(i))?;
        if word(bytes, 8)? != crc(len_bytes) {
            return Err(RecordError::LengthCrc(i));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated(i))?;
        let end = 12usize.checked_add(len).ok_or(RecordError::Truncated(i))?;
        let data = bytes.get(12..end).ok_or(RecordError::Truncated(i))?;
        if word(bytes, end)? != crc(data) {
            return Err(RecordError::DataCrc(i));
        }
        out.push(data.to_vec());
        bytes = &bytes[end + 4..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_a_flipped_bit_is_caught() {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(&[7u8; 300]));
        let records = read_records(&file).unwrap();
        assert_eq!(records, vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]]);
        let mut bad = file.clone();
        bad[13] ^= 1;
        assert_eq!(read_records(&bad), Err(RecordError::DataCrc(0)));
        let mut bad = file.clone();
        bad[0] ^= 1;
        assert_eq!(read_records(&bad), Err(RecordError::LengthCrc(0)));
        assert_eq!(
            read_records(&file[..file.len() - 1]),
            Err(RecordError::Truncated(2))
        );
    }

    #[test]
    fn the_crc_is_tensorflows() {
        // CRC-32C of "123456789" is 0xe3069283 (the check value of the Castagnoli CRC).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked(0), 0xa282_ead8);
    }
}
