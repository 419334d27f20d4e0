//! The subset of BER (X.690) that SNMP uses: single-byte tags, definite
//! lengths, primitive INTEGER / OCTET STRING / NULL / OBJECT IDENTIFIER and
//! the SMI application types. Every read is bounds-checked; nothing here can
//! panic or allocate more than the input's size.

use std::fmt;

/// Tags used by SNMP.
pub(crate) mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIMETICKS: u8 = 0x43;
    pub const OPAQUE: u8 = 0x44;
    pub const COUNTER64: u8 = 0x46;
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    pub const END_OF_MIB_VIEW: u8 = 0x82;
    pub const GET: u8 = 0xa0;
    pub const GET_NEXT: u8 = 0xa1;
    pub const RESPONSE: u8 = 0xa2;
    pub const SET: u8 = 0xa3;
    pub const GET_BULK: u8 = 0xa5;
    pub const INFORM: u8 = 0xa6;
    pub const TRAP_V2: u8 = 0xa7;
    pub const REPORT: u8 = 0xa8;
}

/// The largest SNMP message this crate reads or writes (the largest UDP
/// payload over IPv4).
pub const MAX_MESSAGE: usize = 65_507;
/// The most arcs an OBJECT IDENTIFIER may have (RFC 2578 allows 128).
pub const MAX_OID_ARCS: usize = 128;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong.
    pub reason: &'static str,
    /// Byte offset in the message where it was found.
    pub offset: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over BER data. `base` is the absolute offset of `buf[0]` in the
/// whole message, so positions found deep inside (the USM authentication
/// parameters) can be patched in the original datagram.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

/// One decoded tag-length-value.
#[derive(Debug, Clone)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    /// Absolute offset of the first content byte.
    pub start: usize,
}

impl<'a> Tlv<'a> {
    pub fn reader(&self) -> Reader<'a> {
        Reader {
            buf: self.content,
            pos: 0,
            base: self.start,
        }
    }
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Absolute offset of the cursor.
    pub fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            reason,
            offset: self.offset(),
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn read_tlv(&mut self) -> Result<Tlv<'a>, DecodeError> {
        let tag = self.byte()?;
        if tag & 0x1f == 0x1f {
            return Err(self.err("multi-byte tag"));
        }
        let first = self.byte()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(self.err("indefinite length"));
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(self.err("length field too long"));
            }
            let mut len = 0usize;
            for _ in 0..n {
                len = (len << 8) | usize::from(self.byte()?);
            }
            len
        };
        if len > MAX_MESSAGE {
            return Err(self.err("length exceeds the SNMP message limit"));
        }
        let start = self.pos;
        let end = start
            .checked_add(len)
            .ok_or_else(|| self.err("length overflow"))?;
        let content = self
            .buf
            .get(start..end)
            .ok_or_else(|| self.err("truncated: length runs past the end"))?;
        self.pos = end;
        Ok(Tlv {
            tag,
            content,
            start: self.base.saturating_add(start),
        })
    }

    pub fn expect(&mut self, want: u8, what: &'static str) -> Result<Tlv<'a>, DecodeError> {
        let at = self.offset();
        let tlv = self.read_tlv()?;
        if tlv.tag != want {
            return Err(DecodeError {
                reason: what,
                offset: at,
            });
        }
        Ok(tlv)
    }

    pub fn sequence(&mut self, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(self.expect(tag::SEQUENCE, what)?.reader())
    }

    pub fn integer(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let tlv = self.expect(tag::INTEGER, what)?;
        decode_i64(&tlv)
    }

    pub fn octets(&mut self, what: &'static str) -> Result<Tlv<'a>, DecodeError> {
        self.expect(tag::OCTET_STRING, what)
    }

    pub fn oid(&mut self, what: &'static str) -> Result<Vec<u32>, DecodeError> {
        let tlv = self.expect(tag::OID, what)?;
        decode_oid(&tlv)
    }
}

fn content_err(tlv: &Tlv<'_>, reason: &'static str) -> DecodeError {
    DecodeError {
        reason,
        offset: tlv.start,
    }
}

pub(crate) fn decode_i64(tlv: &Tlv<'_>) -> Result<i64, DecodeError> {
    let c = tlv.content;
    if c.is_empty() {
        return Err(content_err(tlv, "empty INTEGER"));
    }
    if c.len() > 8 {
        return Err(content_err(tlv, "INTEGER wider than 64 bits"));
    }
    let negative = c.first().is_some_and(|b| b & 0x80 != 0);
    let mut v: i64 = if negative { -1 } else { 0 };
    for b in c {
        v = (v << 8) | i64::from(*b);
    }
    Ok(v)
}

/// Unsigned types (Counter32, Gauge32, TimeTicks, Counter64): big-endian,
/// one leading zero byte allowed beyond `max_bytes`.
pub(crate) fn decode_unsigned(tlv: &Tlv<'_>, max_bytes: usize) -> Result<u64, DecodeError> {
    let mut c = tlv.content;
    if c.is_empty() {
        return Err(content_err(tlv, "empty unsigned integer"));
    }
    if c.len() > max_bytes {
        match c.split_first() {
            Some((0, rest)) if rest.len() <= max_bytes => c = rest,
            _ => return Err(content_err(tlv, "unsigned integer too wide")),
        }
    }
    let mut v: u64 = 0;
    for b in c {
        v = (v << 8) | u64::from(*b);
    }
    Ok(v)
}

pub(crate) fn decode_oid(tlv: &Tlv<'_>) -> Result<Vec<u32>, DecodeError> {
    let c = tlv.content;
    if c.is_empty() {
        return Err(content_err(tlv, "empty OBJECT IDENTIFIER"));
    }
    let mut arcs = Vec::with_capacity(c.len().min(MAX_OID_ARCS) + 1);
    let mut acc: u64 = 0;
    let mut in_arc = false;
    for b in c {
        if !in_arc && *b == 0x80 {
            return Err(content_err(tlv, "OID arc with leading zero"));
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if acc > u64::from(u32::MAX) + 80 {
            return Err(content_err(tlv, "OID arc exceeds 32 bits"));
        }
        if b & 0x80 != 0 {
            in_arc = true;
            continue;
        }
        in_arc = false;
        if arcs.is_empty() {
            let first = (acc / 40).min(2);
            let second = acc - first * 40;
            arcs.push(first as u32);
            arcs.push(
                u32::try_from(second).map_err(|_| content_err(tlv, "OID arc exceeds 32 bits"))?,
            );
        } else {
            arcs.push(u32::try_from(acc).map_err(|_| content_err(tlv, "OID arc exceeds 32 bits"))?);
        }
        if arcs.len() > MAX_OID_ARCS {
            return Err(content_err(tlv, "OID has more than 128 arcs"));
        }
        acc = 0;
    }
    if in_arc {
        return Err(content_err(tlv, "OID ends inside an arc"));
    }
    Ok(arcs)
}

// ---- writing ----

pub(crate) fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let sig = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | sig.len() as u8);
        out.extend_from_slice(sig);
    }
}

pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    write_len(out, content.len());
    out.extend_from_slice(content);
}

pub(crate) fn i64_content(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    // Drop redundant leading 0x00 / 0xff bytes while the sign bit stays right.
    while start < 7 {
        let (Some(b), Some(next)) = (bytes.get(start), bytes.get(start + 1)) else {
            break;
        };
        let redundant = (*b == 0 && next & 0x80 == 0) || (*b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes.get(start..).unwrap_or(&[]).to_vec()
}

pub(crate) fn unsigned_content(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if bytes.get(skip).is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(bytes.get(skip..).unwrap_or(&[]));
    out
}

pub(crate) fn write_integer(out: &mut Vec<u8>, v: i64) {
    write_tlv(out, tag::INTEGER, &i64_content(v));
}

pub(crate) fn write_octets(out: &mut Vec<u8>, v: &[u8]) {
    write_tlv(out, tag::OCTET_STRING, v);
}

/// Encodes an OID's content; `None` if it is not encodable (fewer than two
/// arcs, first arc above 2, second above 39 under 0 or 1).
pub(crate) fn oid_content(arcs: &[u32]) -> Option<Vec<u8>> {
    let (&a, rest) = arcs.split_first()?;
    let (&b, rest) = rest.split_first()?;
    if a > 2 || (a < 2 && b >= 40) || arcs.len() > MAX_OID_ARCS {
        return None;
    }
    let mut out = Vec::with_capacity(arcs.len() * 2);
    push_base128(&mut out, u64::from(a) * 40 + u64::from(b));
    for arc in rest {
        push_base128(&mut out, u64::from(*arc));
    }
    Some(out)
}

fn push_base128(out: &mut Vec<u8>, v: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    loop {
        if let Some(slot) = groups.get_mut(n) {
            *slot = (v & 0x7f) as u8;
        }
        n += 1;
        v >>= 7;
        if v == 0 || n >= groups.len() {
            break;
        }
    }
    for i in (0..n).rev() {
        let g = groups.get(i).copied().unwrap_or(0);
        out.push(if i == 0 { g } else { g | 0x80 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_i(v: i64) {
        let mut out = Vec::new();
        write_integer(&mut out, v);
        let mut r = Reader::new(&out);
        assert_eq!(r.integer("int").unwrap(), v, "{out:02x?}");
        assert!(r.is_empty());
    }

    #[test]
    fn integers() {
        for v in [
            0,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            65535,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            roundtrip_i(v);
        }
        let mut out = Vec::new();
        write_integer(&mut out, 128);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80]);
        let mut out = Vec::new();
        write_integer(&mut out, -1);
        assert_eq!(out, [0x02, 0x01, 0xff]);
    }

    #[test]
    fn unsigned() {
        assert_eq!(unsigned_content(0), [0]);
        assert_eq!(unsigned_content(0x80), [0, 0x80]);
        assert_eq!(
            unsigned_content(u64::from(u32::MAX)),
            [0, 0xff, 0xff, 0xff, 0xff]
        );
        let tlv = Tlv {
            tag: tag::GAUGE32,
            content: &[0, 0xff, 0xff, 0xff, 0xff],
            start: 0,
        };
        assert_eq!(decode_unsigned(&tlv, 4).unwrap(), u64::from(u32::MAX));
        let tlv = Tlv {
            tag: tag::GAUGE32,
            content: &[1, 0xff, 0xff, 0xff, 0xff],
            start: 0,
        };
        assert!(decode_unsigned(&tlv, 4).is_err());
    }

    #[test]
    fn oids() {
        let arcs = [1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 4, 1, 1, 0, u32::MAX];
        let c = oid_content(&arcs).unwrap();
        let tlv = Tlv {
            tag: tag::OID,
            content: &c,
            start: 0,
        };
        assert_eq!(decode_oid(&tlv).unwrap(), arcs);
        assert_eq!(oid_content(&[1, 3, 6]).unwrap(), [0x2b, 6]);
        assert!(oid_content(&[1]).is_none());
        assert!(oid_content(&[3, 1]).is_none());
        // 2.999 encodes as one arc of 1079.
        let c = oid_content(&[2, 999]).unwrap();
        let tlv = Tlv {
            tag: tag::OID,
            content: &c,
            start: 0,
        };
        assert_eq!(decode_oid(&tlv).unwrap(), [2, 999]);
    }

    #[test]
    fn lengths() {
        let content = vec![7u8; 300];
        let mut out = Vec::new();
        write_tlv(&mut out, tag::OCTET_STRING, &content);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&out);
        let tlv = r.octets("s").unwrap();
        assert_eq!(tlv.content.len(), 300);
        assert_eq!(tlv.start, 4);
        // Truncated, indefinite and over-long lengths are errors.
        assert!(Reader::new(&out[..100]).read_tlv().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).read_tlv().is_err());
        assert!(
            Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1])
                .read_tlv()
                .is_err()
        );
        assert!(
            Reader::new(&[0x04, 0x84, 0x7f, 0xff, 0xff, 0xff])
                .read_tlv()
                .is_err()
        );
    }
}
