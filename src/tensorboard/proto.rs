//! The `Event` protobuf (`tensorflow/core/util/event.proto` and `summary.proto`), encoded by hand
//! for the fields sapling writes, and decoded for the same fields (tests, tools).
//!
//! Field numbers: `Event { double wall_time = 1; int64 step = 2; string file_version = 3;
//! Summary summary = 5; SessionLog session_log = 7 }`, `SessionLog { status = 1 (START = 1) }`,
//! `Summary { repeated Value value = 1 }`, `Value { string tag = 1; float simple_value = 2;
//! Image image = 4; TensorProto tensor = 8; SummaryMetadata metadata = 9 }`, `Image { int32
//! height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4 }`,
//! `SummaryMetadata { PluginData plugin_data = 1 }`, `PluginData { string plugin_name = 1 }`,
//! `TensorProto { DataType dtype = 1 (DT_STRING = 7); repeated bytes string_val = 8 }`.

use super::Event;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const BYTES: u8 = 2;
const FIXED32: u8 = 5;

/// A message being encoded.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, u64::from(field) << 3 | u64::from(wire));
    }
    fn uint(mut self, field: u32, v: u64) -> Self {
        self.key(field, VARINT);
        varint(&mut self.0, v);
        self
    }
    fn double(mut self, field: u32, v: f64) -> Self {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, field: u32, v: &[u8]) -> Self {
        self.key(field, BYTES);
        varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    fn message(self, field: u32, m: Message) -> Self {
        self.bytes(field, &m.0)
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn event(wall_time: f64, step: u64) -> Message {
    Message::default().double(1, wall_time).uint(2, step)
}

fn summary(wall_time: f64, step: u64, values: Vec<Message>) -> Vec<u8> {
    let summary = values
        .into_iter()
        .fold(Message::default(), |s, v| s.message(1, v));
    event(wall_time, step).message(5, summary).0
}

pub(super) fn file_version(wall_time: f64) -> Vec<u8> {
    event(wall_time, 0).bytes(3, b"brain.Event:2").0
}

pub(super) fn session_start(wall_time: f64, step: u64) -> Vec<u8> {
    event(wall_time, step)
        .message(7, Message::default().uint(1, 1))
        .0
}

pub(super) fn scalars(wall_time: f64, step: u64, values: &[(&str, f64)]) -> Vec<u8> {
    let values = values
        .iter()
        .map(|(tag, v)| {
            Message::default()
                .bytes(1, tag.as_bytes())
                .float(2, *v as f32)
        })
        .collect();
    summary(wall_time, step, values)
}

pub(super) fn image(wall_time: f64, step: u64, tag: &str, png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let image = Message::default()
        .uint(1, u64::from(h))
        .uint(2, u64::from(w))
        .uint(3, 3)
        .bytes(4, png);
    let value = Message::default()
        .bytes(1, tag.as_bytes())
        .message(4, image);
    summary(wall_time, step, vec![value])
}

pub(super) fn text(wall_time: f64, step: u64, tag: &str, text: &str) -> Vec<u8> {
    let plugin = Message::default().bytes(1, b"text");
    let metadata = Message::default().message(1, plugin);
    let tensor = Message::default().uint(1, 7).bytes(8, text.as_bytes());
    let value = Message::default()
        .bytes(1, tag.as_bytes())
        .message(8, tensor)
        .message(9, metadata);
    summary(wall_time, step, vec![value])
}

/// One field as read: its number and its value (a varint or fixed number, or bytes).
enum Field<'a> {
    Number(u64),
    Bytes(&'a [u8]),
}

/// The fields of a message, or `None` if it is not well formed.
fn fields(mut b: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match (key & 7) as u8 {
            VARINT => Field::Number(read_varint(&mut b)?),
            FIXED64 => Field::Number(u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?)),
            FIXED32 => Field::Number(u64::from(u32::from_le_bytes(
                take(&mut b, 4)?.try_into().ok()?,
            ))),
            BYTES => {
                let n = usize::try_from(read_varint(&mut b)?).ok()?;
                Field::Bytes(take(&mut b, n)?)
            }
            _ => return None,
        };
        out.push((field, value));
    }
    Some(out)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (b.get(..n)?, b.get(n..)?);
    *b = rest;
    Some(head)
}

fn read_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn bytes_of<'a>(fields: &[(u32, Field<'a>)], n: u32) -> Option<&'a [u8]> {
    fields.iter().find_map(|(f, v)| match (f, v) {
        (f, Field::Bytes(b)) if *f == n => Some(*b),
        _ => None,
    })
}

fn number_of(fields: &[(u32, Field<'_>)], n: u32) -> Option<u64> {
    fields.iter().find_map(|(f, v)| match (f, v) {
        (f, Field::Number(x)) if *f == n => Some(*x),
        _ => None,
    })
}

/// The event sapling wrote into `bytes`, if it is one.
pub(super) fn decode(bytes: &[u8]) -> Option<Event> {
    let e = fields(bytes)?;
    let step = number_of(&e, 2).unwrap_or(0);
    if let Some(v) = bytes_of(&e, 3) {
        return Some(Event::FileVersion(String::from_utf8(v.to_vec()).ok()?));
    }
    if let Some(log) = bytes_of(&e, 7) {
        return (number_of(&fields(log)?, 1) == Some(1)).then_some(Event::Start { step });
    }
    let summary = fields(bytes_of(&e, 5)?)?;
    let mut values = Vec::new();
    for (_, value) in summary.iter().filter(|(f, _)| *f == 1) {
        let Field::Bytes(value) = value else {
            return None;
        };
        let v = fields(value)?;
        let tag = String::from_utf8(bytes_of(&v, 1)?.to_vec()).ok()?;
        if let Some(image) = bytes_of(&v, 4) {
            let png = bytes_of(&fields(image)?, 4)?.to_vec();
            return Some(Event::Image { step, tag, png });
        }
        if let Some(tensor) = bytes_of(&v, 8) {
            let text = String::from_utf8(bytes_of(&fields(tensor)?, 8)?.to_vec()).ok()?;
            return Some(Event::Text { step, tag, text });
        }
        let x = f32::from_bits(u32::try_from(number_of(&v, 2)?).ok()?);
        values.push((tag, x));
    }
    Some(Event::Scalars { step, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_decodes_to_what_was_encoded() {
        assert_eq!(
            decode(&file_version(1.5)),
            Some(Event::FileVersion("brain.Event:2".into()))
        );
        assert_eq!(
            decode(&session_start(1.5, 301)),
            Some(Event::Start { step: 301 })
        );
        let got = decode(&scalars(
            2.0,
            7,
            &[("train/loss", 0.25), ("train/lr", 1e-4)],
        ));
        let want = vec![("train/loss".into(), 0.25f32), ("train/lr".into(), 1e-4f32)];
        assert_eq!(
            got,
            Some(Event::Scalars {
                step: 7,
                values: want
            })
        );
        let got = decode(&image(2.0, 9, "recon", &[1, 2, 3], 4, 5));
        assert_eq!(
            got,
            Some(Event::Image {
                step: 9,
                tag: "recon".into(),
                png: vec![1, 2, 3]
            })
        );
        let got = decode(&text(2.0, 0, "config", "a = 1"));
        assert_eq!(
            got,
            Some(Event::Text {
                step: 0,
                tag: "config".into(),
                text: "a = 1".into()
            })
        );
    }

    /// The same events serialised by TensorBoard's own protobuf classes (`event_pb2.Event(
    /// wall_time=1.5, step=301, session_log=SessionLog(status=START))` and a `train/loss` of 0.5
    /// at step 7, `SerializeToString()`), so the field numbers are checked against the schema
    /// and not only against this file's decoder.
    #[test]
    fn events_are_byte_for_byte_what_tensorboard_writes() {
        let start = [9, 0, 0, 0, 0, 0, 0, 248, 63, 16, 173, 2, 58, 2, 8, 1];
        assert_eq!(session_start(1.5, 301), start);
        let loss = [
            9, 0, 0, 0, 0, 0, 0, 248, 63, 16, 7, 42, 19, 10, 17, 10, 10, 116, 114, 97, 105, 110,
            47, 108, 111, 115, 115, 21, 0, 0, 0, 63,
        ];
        assert_eq!(scalars(1.5, 7, &[("train/loss", 0.5)]), loss);
    }

    #[test]
    fn varints_take_as_many_bytes_as_protobuf_gives_them() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (300, vec![0xac, 0x02]),
            (u64::MAX, vec![0xff; 9].into_iter().chain([1]).collect()),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(read_varint(&mut out.as_slice()), Some(v));
        }
    }
}
