//! The Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`).
//!
//! An object travels as the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message whose
//! `typeMeta` carries apiVersion and kind and whose `raw` holds the object's own message. Field
//! numbers and types come from upstream's `generated.proto` files; the generated [`Message`]
//! impls write fields in field-number order, as upstream's marshaller does, and write the
//! zero value of fields that Go stores by value (learned from bodies real kubectl sent) so that
//! re-encoding what kubectl sent reproduces its bytes.
//!
//! ```
//! use bosun_api_types::core::v1::ConfigMap;
//! use bosun_api_types::proto;
//!
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! cm.data.insert("mode".into(), "fast".into());
//! let bytes = proto::encode_object(&cm).unwrap();
//! assert!(bytes.starts_with(b"k8s\0"));
//! let back: ConfigMap = proto::decode_object(&bytes).unwrap();
//! assert_eq!(back, cm);
//! ```

use crate::{ByteString, Resource};
use std::collections::BTreeMap;

/// The magic prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";
/// The media type of the Kubernetes protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why bytes are not a valid message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The input ended inside a field.
    #[error("protobuf: unexpected end of input")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("protobuf: varint overflows 64 bits")]
    VarintOverflow,
    /// A wire type this format does not use (groups, or 6/7).
    #[error("protobuf: unsupported wire type {0}")]
    BadWireType(u8),
    /// A field arrived with a different wire type than its schema says.
    #[error("protobuf: field {field} of {message} has wire type {got:?}, expected {want:?}")]
    WrongWireType {
        /// Message name.
        message: &'static str,
        /// Field number.
        field: u32,
        /// What arrived.
        got: WireType,
        /// What the schema says.
        want: WireType,
    },
    /// A field number of 0.
    #[error("protobuf: invalid field number 0")]
    ZeroField,
    /// A string that is not UTF-8.
    #[error("protobuf: string field is not valid UTF-8")]
    Utf8,
    /// A value that does not fit its field (a bad quantity, time or embedded JSON).
    #[error("protobuf: invalid {what}: {detail}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// Nested messages deeper than the limit.
    #[error("protobuf: messages nested deeper than {0}")]
    TooDeep(usize),
    /// The body does not start with `k8s\0`.
    #[error("protobuf: body does not start with the k8s\\0 magic")]
    NoMagic,
    /// The envelope names another kind than the one expected.
    #[error("protobuf: body is {got}, expected {want}")]
    WrongKind {
        /// apiVersion/kind in the body.
        got: String,
        /// apiVersion/kind expected.
        want: String,
    },
    /// The kind has no protobuf schema in this crate.
    #[error("protobuf: {0} has no protobuf encoding")]
    Unsupported(&'static str),
}

/// Protobuf wire types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    /// Varint (int32, int64, bool).
    Varint,
    /// 8 bytes (double).
    Fixed64,
    /// Length-delimited (string, bytes, message, packed repeated).
    Len,
    /// 4 bytes (float).
    Fixed32,
}

impl WireType {
    fn from_bits(b: u8) -> Result<Self, ProtoError> {
        match b {
            0 => Ok(WireType::Varint),
            1 => Ok(WireType::Fixed64),
            2 => Ok(WireType::Len),
            5 => Ok(WireType::Fixed32),
            other => Err(ProtoError::BadWireType(other)),
        }
    }

    fn bits(self) -> u64 {
        match self {
            WireType::Varint => 0,
            WireType::Fixed64 => 1,
            WireType::Len => 2,
            WireType::Fixed32 => 5,
        }
    }
}

/// Maximum nesting of messages accepted when decoding (upstream's JSON depth limit is similar).
pub const MAX_DEPTH: usize = 100;

/// A cursor over protobuf bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` at nesting depth 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, depth: 0 }
    }

    /// Whether all bytes were consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads a varint.
    pub fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(i).ok_or(ProtoError::Truncated)?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(ProtoError::VarintOverflow)
    }

    /// Reads a field key.
    pub fn key(&mut self) -> Result<(u32, WireType), ProtoError> {
        let k = self.varint()?;
        let field = u32::try_from(k >> 3).map_err(|_| ProtoError::ZeroField)?;
        if field == 0 {
            return Err(ProtoError::ZeroField);
        }
        Ok((field, WireType::from_bits((k & 7) as u8)?))
    }

    /// Reads `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.buf.len() {
            return Err(ProtoError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads a length-delimited payload.
    pub fn len_delimited(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
        self.take(n)
    }

    /// A reader over a nested message's bytes, one level deeper.
    pub fn nested(&mut self) -> Result<Reader<'a>, ProtoError> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(ProtoError::TooDeep(MAX_DEPTH));
        }
        Ok(Reader {
            buf: self.len_delimited()?,
            depth,
        })
    }

    /// Skips a field of the given wire type.
    pub fn skip(&mut self, wire: WireType) -> Result<(), ProtoError> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.take(8).map(drop),
            WireType::Fixed32 => self.take(4).map(drop),
            WireType::Len => self.len_delimited().map(drop),
        }
    }
}

/// Writes a varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes a field key.
pub fn put_key(buf: &mut Vec<u8>, field: u32, wire: WireType) {
    put_varint(buf, (u64::from(field) << 3) | wire.bits());
}

/// Writes a length prefix for the bytes written since `start` (which were written after it).
fn prefix_len(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start) as u64;
    let mut tmp = Vec::with_capacity(10);
    put_varint(&mut tmp, len);
    buf.splice(start..start, tmp);
}

/// A protobuf message: a generated or hand-written type with a `generated.proto` schema.
pub trait Message: Default {
    /// Message name, for errors.
    const NAME: &'static str;
    /// False for kinds this crate has no protobuf schema for.
    const SUPPORTED: bool = true;

    /// Writes the message's fields (without a length prefix).
    fn encode_fields(&self, buf: &mut Vec<u8>);

    /// Reads one field; unknown fields must be skipped.
    fn merge_field(
        &mut self,
        field: u32,
        wire: WireType,
        r: &mut Reader<'_>,
    ) -> Result<(), ProtoError>;

    /// Called once all fields are read: drops zero values Go wrote for fields it stores by value,
    /// which upstream's JSON would omit, and leaves a kind's apiVersion/kind empty (protobuf
    /// carries them only in the envelope).
    fn after_decode(&mut self) {}

    /// Sets apiVersion and kind (a no-op for types that are not kinds).
    fn set_type_meta(&mut self, _api_version: &str, _kind: &str) {}

    /// Decodes a message from its bytes.
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let mut m = Self::default();
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            m.merge_field(field, wire, r)?;
        }
        m.after_decode();
        Ok(m)
    }

    /// Decodes a message from a byte slice.
    fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        Self::decode_from(&mut Reader::new(bytes))
    }

    /// Encodes the message into a new vector.
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_fields(&mut buf);
        buf
    }
}

/// A value that can stand in a field: scalars, strings, bytes and messages.
pub trait ProtoValue: Sized {
    /// Wire type of the value.
    const WIRE: WireType;
    /// Writes the value (for length-delimited values, with its length prefix).
    fn put(&self, buf: &mut Vec<u8>);
    /// Reads the value.
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError>;
    /// Whether this is the zero value Go writes for an unset value field.
    fn is_zero(&self) -> bool;
    /// The zero value.
    fn zero() -> Self;
    /// Reads the value into `self`: messages merge field by field (protobuf semantics, and no
    /// large moves); other values are replaced.
    fn merge_from(&mut self, r: &mut Reader<'_>) -> Result<(), ProtoError> {
        *self = Self::get(r)?;
        Ok(())
    }
}

impl<T: Message + PartialEq> ProtoValue for T {
    const WIRE: WireType = WireType::Len;
    fn put(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        self.encode_fields(buf);
        prefix_len(buf, start);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        T::decode_from(&mut r.nested()?)
    }
    fn is_zero(&self) -> bool {
        *self == T::default()
    }
    fn zero() -> Self {
        T::default()
    }
    fn merge_from(&mut self, r: &mut Reader<'_>) -> Result<(), ProtoError> {
        let mut inner = r.nested()?;
        while !inner.is_empty() {
            let (field, wire) = inner.key()?;
            self.merge_field(field, wire, &mut inner)?;
        }
        self.after_decode();
        Ok(())
    }
}

impl ProtoValue for String {
    const WIRE: WireType = WireType::Len;
    fn put(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.len() as u64);
        buf.extend_from_slice(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        String::from_utf8(r.len_delimited()?.to_vec()).map_err(|_| ProtoError::Utf8)
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
    fn zero() -> Self {
        String::new()
    }
}

impl ProtoValue for ByteString {
    const WIRE: WireType = WireType::Len;
    fn put(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.0.len() as u64);
        buf.extend_from_slice(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ByteString(r.len_delimited()?.to_vec()))
    }
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn zero() -> Self {
        ByteString::default()
    }
}

impl ProtoValue for i32 {
    const WIRE: WireType = WireType::Varint;
    fn put(&self, buf: &mut Vec<u8>) {
        // Negative int32 values are sign-extended to 64 bits, as in every protobuf runtime.
        put_varint(buf, i64::from(*self) as u64);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(r.varint()? as i32)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
    fn zero() -> Self {
        0
    }
}

impl ProtoValue for i64 {
    const WIRE: WireType = WireType::Varint;
    fn put(&self, buf: &mut Vec<u8>) {
        put_varint(buf, *self as u64);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(r.varint()? as i64)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
    fn zero() -> Self {
        0
    }
}

impl ProtoValue for bool {
    const WIRE: WireType = WireType::Varint;
    fn put(&self, buf: &mut Vec<u8>) {
        buf.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(r.varint()? != 0)
    }
    fn is_zero(&self) -> bool {
        !*self
    }
    fn zero() -> Self {
        false
    }
}

impl ProtoValue for f64 {
    const WIRE: WireType = WireType::Fixed64;
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let b = r.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }
    fn is_zero(&self) -> bool {
        *self == 0.0
    }
    fn zero() -> Self {
        0.0
    }
}

/// A map value that is a list of strings travels as a message with `repeated string items = 1`
/// (upstream's `ExtraValue`).
impl ProtoValue for Vec<String> {
    const WIRE: WireType = WireType::Len;
    fn put(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        for s in self {
            put_field(buf, 1, s);
        }
        prefix_len(buf, start);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let mut inner = r.nested()?;
        let mut out = Vec::new();
        while !inner.is_empty() {
            match inner.key()? {
                (1, WireType::Len) => out.push(String::get(&mut inner)?),
                (_, w) => inner.skip(w)?,
            }
        }
        Ok(out)
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
    fn zero() -> Self {
        Vec::new()
    }
}

/// Writes a field: key and value.
pub fn put_field<T: ProtoValue>(buf: &mut Vec<u8>, field: u32, v: &T) {
    put_key(buf, field, T::WIRE);
    v.put(buf);
}

/// Writes an optional field; a value field (`by_value`) is written as zero when unset, as Go does.
pub fn put_opt<T: ProtoValue>(buf: &mut Vec<u8>, field: u32, v: Option<&T>, by_value: bool) {
    match v {
        Some(v) => put_field(buf, field, v),
        None if by_value => put_field(buf, field, &T::zero()),
        None => {}
    }
}

/// Starts a nested message field; returns where its body starts (for [`end_message`]).
pub fn begin_message(buf: &mut Vec<u8>, field: u32) -> usize {
    put_key(buf, field, WireType::Len);
    buf.len()
}

/// Ends a nested message begun with [`begin_message`], writing its length prefix.
pub fn end_message(buf: &mut Vec<u8>, start: usize) {
    prefix_len(buf, start);
}

/// A reader over a nested message field (checking its wire type).
pub fn nested_reader<'a>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'a>,
) -> Result<Reader<'a>, ProtoError> {
    check_wire(message, field, wire, WireType::Len)?;
    r.nested()
}

/// Writes every element of a repeated field (unpacked, as proto2 does).
pub fn put_repeated<T: ProtoValue>(buf: &mut Vec<u8>, field: u32, v: &[T]) {
    for x in v {
        put_field(buf, field, x);
    }
}

/// Writes map entries in key order (as upstream's marshaller sorts them).
pub fn put_map<V: ProtoValue>(buf: &mut Vec<u8>, field: u32, m: &BTreeMap<String, V>) {
    for (k, v) in m {
        put_key(buf, field, WireType::Len);
        let start = buf.len();
        put_field(buf, 1, k);
        put_field(buf, 2, v);
        prefix_len(buf, start);
    }
}

fn check_wire(
    message: &'static str,
    field: u32,
    got: WireType,
    want: WireType,
) -> Result<(), ProtoError> {
    if got == want {
        Ok(())
    } else {
        Err(ProtoError::WrongWireType {
            message,
            field,
            got,
            want,
        })
    }
}

/// Reads a singular field.
pub fn get_field<T: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
) -> Result<T, ProtoError> {
    check_wire(message, field, wire, T::WIRE)?;
    T::get(r)
}

/// Reads a singular field into place (merging messages).
pub fn merge_into<T: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
    into: &mut T,
) -> Result<(), ProtoError> {
    check_wire(message, field, wire, T::WIRE)?;
    into.merge_from(r)
}

/// Reads an optional field into place, creating it first if unset.
pub fn merge_opt<T: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
    into: &mut Option<T>,
) -> Result<(), ProtoError> {
    check_wire(message, field, wire, T::WIRE)?;
    into.get_or_insert_with(T::zero).merge_from(r)
}

/// Reads a boxed optional field (a recursive type) into place.
pub fn merge_opt_box<T: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
    into: &mut Option<Box<T>>,
) -> Result<(), ProtoError> {
    check_wire(message, field, wire, T::WIRE)?;
    into.get_or_insert_with(|| Box::new(T::zero()))
        .merge_from(r)
}

/// Reads one occurrence of a repeated field (packed or not).
pub fn get_repeated<T: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
    out: &mut Vec<T>,
) -> Result<(), ProtoError> {
    if wire == WireType::Len && T::WIRE != WireType::Len {
        let mut packed = Reader::new(r.len_delimited()?);
        while !packed.is_empty() {
            out.push(T::get(&mut packed)?);
        }
        return Ok(());
    }
    check_wire(message, field, wire, T::WIRE)?;
    out.push(T::zero());
    match out.last_mut() {
        Some(last) => last.merge_from(r),
        None => Ok(()),
    }
}

/// Reads one map entry.
pub fn get_map_entry<V: ProtoValue>(
    message: &'static str,
    field: u32,
    wire: WireType,
    r: &mut Reader<'_>,
    out: &mut BTreeMap<String, V>,
) -> Result<(), ProtoError> {
    check_wire(message, field, wire, WireType::Len)?;
    let mut entry = r.nested()?;
    let (mut key, mut value) = (String::new(), None);
    while !entry.is_empty() {
        match entry.key()? {
            (1, w) => key = get_field(message, field, w, &mut entry)?,
            (2, w) => value = Some(get_field(message, field, w, &mut entry)?),
            (_, w) => entry.skip(w)?,
        }
    }
    out.insert(key, value.unwrap_or_else(V::zero));
    Ok(())
}

/// Drops a decoded zero value of a field Go stores by value (its JSON would omit it).
pub fn drop_zero<T: ProtoValue>(v: &mut Option<T>) {
    if v.as_ref().is_some_and(ProtoValue::is_zero) {
        *v = None;
    }
}

/// `runtime.TypeMeta` of the envelope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct EnvelopeType {
    api_version: String,
    kind: String,
}

impl Message for EnvelopeType {
    const NAME: &'static str = "runtime.TypeMeta";
    fn encode_fields(&self, buf: &mut Vec<u8>) {
        put_field(buf, 1, &self.api_version);
        put_field(buf, 2, &self.kind);
    }
    fn merge_field(
        &mut self,
        field: u32,
        wire: WireType,
        r: &mut Reader<'_>,
    ) -> Result<(), ProtoError> {
        match field {
            1 => self.api_version = get_field(Self::NAME, field, wire, r)?,
            2 => self.kind = get_field(Self::NAME, field, wire, r)?,
            _ => r.skip(wire)?,
        }
        Ok(())
    }
}

/// An envelope (`runtime.Unknown`) opened: the type it names and the object's message bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unknown {
    /// apiVersion from the envelope.
    pub api_version: String,
    /// kind from the envelope.
    pub kind: String,
    /// The object's message bytes.
    pub raw: Vec<u8>,
    /// Content encoding (empty in practice).
    pub content_encoding: String,
    /// Content type (empty in practice).
    pub content_type: String,
}

impl Message for Unknown {
    const NAME: &'static str = "runtime.Unknown";
    fn encode_fields(&self, buf: &mut Vec<u8>) {
        let t = EnvelopeType {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
        };
        put_field(buf, 1, &t);
        put_field(buf, 2, &ByteString(self.raw.clone()));
        put_field(buf, 3, &self.content_encoding);
        put_field(buf, 4, &self.content_type);
    }
    fn merge_field(
        &mut self,
        field: u32,
        wire: WireType,
        r: &mut Reader<'_>,
    ) -> Result<(), ProtoError> {
        match field {
            1 => {
                let t: EnvelopeType = get_field(Self::NAME, field, wire, r)?;
                self.api_version = t.api_version;
                self.kind = t.kind;
            }
            2 => self.raw = get_field::<ByteString>(Self::NAME, field, wire, r)?.0,
            3 => self.content_encoding = get_field(Self::NAME, field, wire, r)?,
            4 => self.content_type = get_field(Self::NAME, field, wire, r)?,
            _ => r.skip(wire)?,
        }
        Ok(())
    }
}

/// Opens a `k8s\0` body: which kind it holds and the object's bytes.
pub fn decode_unknown(body: &[u8]) -> Result<Unknown, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtoError::NoMagic)?;
    Unknown::decode(rest)
}

/// Encodes `apiVersion`/`kind` and message bytes into a `k8s\0` body.
pub fn encode_unknown(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        raw,
        ..Default::default()
    };
    let mut out = MAGIC.to_vec();
    u.encode_fields(&mut out);
    out
}

/// Encodes a typed object as a Kubernetes protobuf body.
pub fn encode_object<K: Resource + Message>(obj: &K) -> Result<Vec<u8>, ProtoError> {
    if !K::SUPPORTED {
        return Err(ProtoError::Unsupported(K::NAME));
    }
    Ok(encode_unknown(
        K::INFO.api_version,
        K::INFO.kind,
        obj.encode(),
    ))
}

/// Decodes a Kubernetes protobuf body into `K`; fails if the body names another kind.
pub fn decode_object<K: Resource + Message>(body: &[u8]) -> Result<K, ProtoError> {
    if !K::SUPPORTED {
        return Err(ProtoError::Unsupported(K::NAME));
    }
    let u = decode_unknown(body)?;
    if u.api_version != K::INFO.api_version || u.kind != K::INFO.kind {
        return Err(ProtoError::WrongKind {
            got: format!("{} {}", u.api_version, u.kind),
            want: format!("{} {}", K::INFO.api_version, K::INFO.kind),
        });
    }
    let mut obj = K::decode(&u.raw)?;
    obj.set_type_meta(&u.api_version, &u.kind);
    Ok(obj)
}

/// Encodes a typed list (`PodList` is `List<Pod>`) as a Kubernetes protobuf body: every built-in
/// list message has the list metadata in field 1 and the items in field 2.
pub fn encode_list<K: Resource + Message + PartialEq>(
    list: &crate::List<K>,
) -> Result<Vec<u8>, ProtoError> {
    if !K::SUPPORTED {
        return Err(ProtoError::Unsupported(K::NAME));
    }
    let mut raw = Vec::new();
    put_field(&mut raw, 1, &list.metadata);
    put_repeated(&mut raw, 2, &list.items);
    Ok(encode_unknown(K::INFO.api_version, K::INFO.list_kind, raw))
}

/// Decodes a Kubernetes protobuf list body of `K`.
pub fn decode_list<K: Resource + Message + PartialEq>(
    body: &[u8],
) -> Result<crate::List<K>, ProtoError> {
    if !K::SUPPORTED {
        return Err(ProtoError::Unsupported(K::NAME));
    }
    let u = decode_unknown(body)?;
    if u.api_version != K::INFO.api_version || u.kind != K::INFO.list_kind {
        return Err(ProtoError::WrongKind {
            got: format!("{} {}", u.api_version, u.kind),
            want: format!("{} {}", K::INFO.api_version, K::INFO.list_kind),
        });
    }
    let mut list = crate::List::<K>::default();
    let mut r = Reader::new(&u.raw);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => list.metadata = get_field(K::INFO.list_kind, field, wire, &mut r)?,
            2 => get_repeated(K::INFO.list_kind, field, wire, &mut r, &mut list.items)?,
            _ => r.skip(wire)?,
        }
    }
    for item in &mut list.items {
        item.set_type_meta("", "");
    }
    Ok(list)
}

/// `meta.k8s.io/v1` `PartialObjectMetadata` (an object's metadata only) as a protobuf body.
pub fn encode_partial_object(meta: &crate::meta::v1::ObjectMeta) -> Vec<u8> {
    let mut raw = Vec::new();
    put_field(&mut raw, 1, meta);
    encode_unknown("meta.k8s.io/v1", "PartialObjectMetadata", raw)
}

/// `meta.k8s.io/v1` `PartialObjectMetadataList` as a protobuf body.
pub fn encode_partial_list(
    meta: &crate::meta::v1::ListMeta,
    items: &[crate::meta::v1::ObjectMeta],
) -> Vec<u8> {
    let mut raw = Vec::new();
    // PartialObjectMetadataList: metadata = 1, items = 2 (each {metadata = 1}).
    put_field(&mut raw, 1, meta);
    for item in items {
        let start = begin_message(&mut raw, 2);
        put_field(&mut raw, 1, item);
        end_message(&mut raw, start);
    }
    encode_unknown("meta.k8s.io/v1", "PartialObjectMetadataList", raw)
}

/// One frame of a protobuf watch stream (`application/vnd.kubernetes.protobuf;stream=watch`):
/// a 4-byte big-endian length, then a `meta.k8s.io/v1` `WatchEvent` message (no envelope) whose
/// object is a complete protobuf body (`k8s\0` and envelope).
pub fn encode_watch_frame(event_type: &str, object_body: &[u8]) -> Vec<u8> {
    let mut event = Vec::with_capacity(object_body.len() + 32);
    put_field(&mut event, 1, &event_type.to_owned());
    let start = begin_message(&mut event, 2);
    put_field(&mut event, 1, &ByteString(object_body.to_vec()));
    end_message(&mut event, start);
    let mut frame = Vec::with_capacity(event.len() + 4);
    frame.extend_from_slice(&(event.len() as u32).to_be_bytes());
    frame.extend_from_slice(&event);
    frame
}

/// Reads one frame of a protobuf watch stream from the front of `buf`: the event type, the
/// object's protobuf body, and the bytes the frame took; `None` if `buf` holds no whole frame.
pub fn decode_watch_frame(buf: &[u8]) -> Result<Option<(String, Vec<u8>, usize)>, ProtoError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(event) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let mut r = Reader::new(event);
    let mut kind = String::new();
    let mut object = Vec::new();
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => kind = get_field("WatchEvent", field, wire, &mut r)?,
            2 => {
                let mut raw = nested_reader("WatchEvent", field, wire, &mut r)?;
                while !raw.is_empty() {
                    let (f, w) = raw.key()?;
                    match f {
                        1 => object = get_field::<ByteString>("RawExtension", f, w, &mut raw)?.0,
                        _ => raw.skip(w)?,
                    }
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(Some((kind, object, 4 + len)))
}

/// Hand-written messages: the types with custom wire forms upstream.
mod special {
    use super::*;
    use crate::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, JSONSchemaPropsOrStringArray, JSON,
    };
    use crate::meta::v1::FieldsV1;
    use crate::{IntOrString, MicroTime, Quantity, RawExtension, Time};

    fn skip_rest(r: &mut Reader<'_>, wire: WireType) -> Result<(), ProtoError> {
        r.skip(wire)
    }

    impl Message for Quantity {
        const NAME: &'static str = "resource.Quantity";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            put_field(buf, 1, &self.to_string());
        }
        fn merge_field(
            &mut self,
            field: u32,
            wire: WireType,
            r: &mut Reader<'_>,
        ) -> Result<(), ProtoError> {
            match field {
                1 => {
                    let s: String = get_field(Self::NAME, field, wire, r)?;
                    *self = s
                        .parse()
                        .map_err(|e: crate::QuantityError| ProtoError::Invalid {
                            what: "quantity",
                            detail: format!("{s:?}: {e}"),
                        })?;
                    Ok(())
                }
                _ => skip_rest(r, wire),
            }
        }
    }

    impl Message for IntOrString {
        const NAME: &'static str = "intstr.IntOrString";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            let (t, i, s) = match self {
                IntOrString::Int(i) => (0i64, *i, ""),
                IntOrString::String(s) => (1, 0, s.as_str()),
            };
            put_field(buf, 1, &t);
            put_field(buf, 2, &i);
            put_field(buf, 3, &s.to_owned());
        }
        fn merge_field(
            &mut self,
            field: u32,
            wire: WireType,
            r: &mut Reader<'_>,
        ) -> Result<(), ProtoError> {
            // The type tag arrives first; the value fields fill the variant it chose.
            match field {
                1 => {
                    let t: i64 = get_field(Self::NAME, field, wire, r)?;
                    *self = if t == 1 {
                        IntOrString::String(String::new())
                    } else {
                        IntOrString::Int(0)
                    };
                }
                2 => {
                    let v: i32 = get_field(Self::NAME, field, wire, r)?;
                    if let IntOrString::Int(i) = self {
                        *i = v;
                    }
                }
                3 => {
                    let v: String = get_field(Self::NAME, field, wire, r)?;
                    if let IntOrString::String(s) = self {
                        *s = v;
                    }
                }
                _ => skip_rest(r, wire)?,
            }
            Ok(())
        }
    }

    macro_rules! timestamp_message {
        ($t:ty, $name:literal, $nanos:expr) => {
            impl Message for $t {
                const NAME: &'static str = $name;
                fn encode_fields(&self, buf: &mut Vec<u8>) {
                    // Go writes nothing for its zero time.
                    if self.is_zero() {
                        return;
                    }
                    put_field(buf, 1, &self.unix_seconds());
                    let nanos: fn(&$t) -> i32 = $nanos;
                    put_field(buf, 2, &nanos(self));
                }
                fn merge_field(
                    &mut self,
                    field: u32,
                    wire: WireType,
                    r: &mut Reader<'_>,
                ) -> Result<(), ProtoError> {
                    match field {
                        1 => {
                            let s: i64 = get_field(Self::NAME, field, wire, r)?;
                            *self = <$t>::from_unix(s, self.subsec_nanos());
                        }
                        2 => {
                            let n: i32 = get_field(Self::NAME, field, wire, r)?;
                            let n = u32::try_from(n).map_err(|_| ProtoError::Invalid {
                                what: "timestamp",
                                detail: format!("negative nanos {n}"),
                            })?;
                            *self = <$t>::from_unix(self.unix_seconds(), n);
                        }
                        _ => skip_rest(r, wire)?,
                    }
                    Ok(())
                }
            }
        };
    }
    // metav1.Time writes only whole seconds (nanos 0); MicroTime writes microseconds.
    timestamp_message!(Time, "v1.Time", |_| 0);
    timestamp_message!(MicroTime, "v1.MicroTime", |t| t.subsec_nanos() as i32);

    fn json_bytes(v: &serde_json::Value) -> Option<Vec<u8>> {
        if v.is_null() {
            None
        } else {
            serde_json::to_vec(v).ok()
        }
    }

    fn parse_json(what: &'static str, b: &[u8]) -> Result<serde_json::Value, ProtoError> {
        if b.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(b).map_err(|e| ProtoError::Invalid {
            what,
            detail: e.to_string(),
        })
    }

    macro_rules! raw_json_message {
        ($t:ty, $name:literal, $what:literal) => {
            impl Message for $t {
                const NAME: &'static str = $name;
                fn encode_fields(&self, buf: &mut Vec<u8>) {
                    if let Some(b) = json_bytes(&self.0) {
                        put_field(buf, 1, &ByteString(b));
                    }
                }
                fn merge_field(
                    &mut self,
                    field: u32,
                    wire: WireType,
                    r: &mut Reader<'_>,
                ) -> Result<(), ProtoError> {
                    match field {
                        1 => {
                            let b: ByteString = get_field(Self::NAME, field, wire, r)?;
                            self.0 = parse_json($what, &b.0)?;
                            Ok(())
                        }
                        _ => skip_rest(r, wire),
                    }
                }
            }
        };
    }
    raw_json_message!(RawExtension, "runtime.RawExtension", "embedded object");
    raw_json_message!(FieldsV1, "v1.FieldsV1", "managed fields");
    raw_json_message!(JSON, "v1.JSON", "JSON value");

    /// Reads the fields of a union message into (schema, list of schemas or strings, allows).
    fn union_fields<L: ProtoValue>(
        name: &'static str,
        schema_field: u32,
        list_field: u32,
        r: &mut Reader<'_>,
    ) -> Result<
        (
            Option<crate::apiextensions::v1::JSONSchemaProps>,
            Vec<L>,
            bool,
        ),
        ProtoError,
    > {
        let mut inner = r.nested()?;
        let (mut schema, mut list, mut allows) = (None, Vec::new(), false);
        while !inner.is_empty() {
            let (f, w) = inner.key()?;
            if f == schema_field {
                schema = Some(get_field(name, f, w, &mut inner)?);
            } else if f == list_field {
                get_repeated(name, f, w, &mut inner, &mut list)?;
            } else if f == 1 && schema_field == 2 {
                allows = get_field(name, f, w, &mut inner)?;
            } else {
                inner.skip(w)?;
            }
        }
        Ok((schema, list, allows))
    }

    fn put_union(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        let start = buf.len();
        body(buf);
        prefix_len(buf, start);
    }

    impl ProtoValue for JSONSchemaPropsOrArray {
        const WIRE: WireType = WireType::Len;
        fn put(&self, buf: &mut Vec<u8>) {
            put_union(buf, |b| match self {
                JSONSchemaPropsOrArray::Schema(s) => put_field(b, 1, s.as_ref()),
                JSONSchemaPropsOrArray::Schemas(list) => put_repeated(b, 2, list),
            });
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
            let (schema, list, _) = union_fields("v1.JSONSchemaPropsOrArray", 1, 2, r)?;
            Ok(match schema {
                Some(s) => JSONSchemaPropsOrArray::Schema(Box::new(s)),
                None => JSONSchemaPropsOrArray::Schemas(list),
            })
        }
        fn is_zero(&self) -> bool {
            matches!(self, JSONSchemaPropsOrArray::Schemas(l) if l.is_empty())
        }
        fn zero() -> Self {
            JSONSchemaPropsOrArray::Schemas(Vec::new())
        }
    }

    impl ProtoValue for JSONSchemaPropsOrBool {
        const WIRE: WireType = WireType::Len;
        fn put(&self, buf: &mut Vec<u8>) {
            put_union(buf, |b| match self {
                JSONSchemaPropsOrBool::Bool(v) => put_field(b, 1, v),
                JSONSchemaPropsOrBool::Schema(s) => {
                    put_field(b, 1, &true);
                    put_field(b, 2, s.as_ref());
                }
            });
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
            let (schema, _, allows) = union_fields::<String>("v1.JSONSchemaPropsOrBool", 2, 0, r)?;
            Ok(match schema {
                Some(s) => JSONSchemaPropsOrBool::Schema(Box::new(s)),
                None => JSONSchemaPropsOrBool::Bool(allows),
            })
        }
        fn is_zero(&self) -> bool {
            matches!(self, JSONSchemaPropsOrBool::Bool(false))
        }
        fn zero() -> Self {
            JSONSchemaPropsOrBool::Bool(false)
        }
    }

    impl ProtoValue for JSONSchemaPropsOrStringArray {
        const WIRE: WireType = WireType::Len;
        fn put(&self, buf: &mut Vec<u8>) {
            put_union(buf, |b| match self {
                JSONSchemaPropsOrStringArray::Schema(s) => put_field(b, 1, s.as_ref()),
                JSONSchemaPropsOrStringArray::Strings(list) => put_repeated(b, 2, list),
            });
        }
        fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
            let (schema, list, _) = union_fields("v1.JSONSchemaPropsOrStringArray", 1, 2, r)?;
            Ok(match schema {
                Some(s) => JSONSchemaPropsOrStringArray::Schema(Box::new(s)),
                None => JSONSchemaPropsOrStringArray::Strings(list),
            })
        }
        fn is_zero(&self) -> bool {
            matches!(self, JSONSchemaPropsOrStringArray::Strings(l) if l.is_empty())
        }
        fn zero() -> Self {
            JSONSchemaPropsOrStringArray::Strings(Vec::new())
        }
    }

    /// Every list kind: `metadata = 1`, `items = 2`.
    impl<K: Resource + Message + PartialEq> Message for crate::List<K> {
        const NAME: &'static str = "List";
        fn encode_fields(&self, buf: &mut Vec<u8>) {
            put_field(buf, 1, &self.metadata);
            put_repeated(buf, 2, &self.items);
        }
        fn merge_field(
            &mut self,
            field: u32,
            wire: WireType,
            r: &mut Reader<'_>,
        ) -> Result<(), ProtoError> {
            match field {
                1 => self.metadata = get_field(Self::NAME, field, wire, r)?,
                2 => get_repeated(Self::NAME, field, wire, r, &mut self.items)?,
                _ => r.skip(wire)?,
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_errors() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        assert_eq!(Reader::new(&b).varint().unwrap(), 300);
        let mut b = Vec::new();
        (-1i32).put(&mut b);
        assert_eq!(b.len(), 10);
        assert_eq!(i32::get(&mut Reader::new(&b)).unwrap(), -1);
        assert_eq!(Reader::new(&[0x80]).varint(), Err(ProtoError::Truncated));
        assert_eq!(
            Reader::new(&[0xff; 11]).varint(),
            Err(ProtoError::VarintOverflow)
        );
        assert_eq!(Reader::new(&[0x00]).key(), Err(ProtoError::ZeroField));
        assert_eq!(Reader::new(&[0x0b]).key(), Err(ProtoError::BadWireType(3)));
        assert_eq!(
            Reader::new(&[0x05, 1]).len_delimited(),
            Err(ProtoError::Truncated)
        );
        assert_eq!(decode_unknown(b"json"), Err(ProtoError::NoMagic));
    }

    #[test]
    fn lists_and_watch_frames_round_trip() {
        use crate::core::v1::ConfigMap;
        use crate::meta::v1::{ListMeta, ObjectMeta};
        let cm = |name: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: [("k".to_owned(), "v".to_owned())].into(),
            ..Default::default()
        };
        let mut list = crate::List::from(vec![cm("a"), cm("b")]);
        list.metadata = ListMeta {
            resource_version: Some("42".into()),
            ..Default::default()
        };
        let body = encode_list(&list).unwrap();
        let u = decode_unknown(&body).unwrap();
        assert_eq!(
            (u.api_version.as_str(), u.kind.as_str()),
            ("v1", "ConfigMapList")
        );
        let back: crate::List<ConfigMap> = decode_list(&body).unwrap();
        assert_eq!(back.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(back.items.len(), 2);
        assert_eq!(back.items[1].data, list.items[1].data);
        assert!(decode_list::<crate::core::v1::Secret>(&body).is_err());

        let obj = encode_object(&cm("a")).unwrap();
        let mut stream = encode_watch_frame("ADDED", &obj);
        stream.extend(encode_watch_frame("DELETED", &obj));
        let (kind, got, used) = decode_watch_frame(&stream).unwrap().unwrap();
        assert_eq!((kind.as_str(), got.as_slice()), ("ADDED", obj.as_slice()));
        let (kind, _, used2) = decode_watch_frame(&stream[used..]).unwrap().unwrap();
        assert_eq!(kind, "DELETED");
        assert_eq!(used + used2, stream.len());
        assert_eq!(decode_watch_frame(&stream[..used - 1]).unwrap(), None);

        let partial = encode_partial_list(&list.metadata, &[list.items[0].metadata.clone()]);
        let u = decode_unknown(&partial).unwrap();
        assert_eq!(u.kind, "PartialObjectMetadataList");
    }
}
