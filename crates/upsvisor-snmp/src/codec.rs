//! SNMP messages, sans I/O: OIDs, values, PDUs and the community-based
//! (v1/v2c) message, with encoders and bounded, panic-free decoders.
//! SNMPv3 messages are in [`crate::usm`].

use std::fmt;
use std::str::FromStr;

use crate::ber::{self, DecodeError, Reader, tag};

pub use crate::ber::{MAX_MESSAGE, MAX_OID_ARCS};

/// The most variable bindings a decoded PDU may carry.
pub const MAX_VARBINDS: usize = 512;

/// An OBJECT IDENTIFIER.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(Vec<u32>);

impl Oid {
    /// An OID from its arcs.
    pub fn new(arcs: impl Into<Vec<u32>>) -> Self {
        Oid(arcs.into())
    }

    /// Its arcs.
    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// This OID with `arc` appended (a table column plus an index).
    pub fn child(&self, arc: u32) -> Oid {
        let mut v = self.0.clone();
        v.push(arc);
        Oid(v)
    }

    /// Whether `self` lies under `prefix` (and is not `prefix` itself).
    pub fn is_under(&self, prefix: &Oid) -> bool {
        self.0.len() > prefix.0.len() && self.0.starts_with(&prefix.0)
    }

    /// The arc just below `prefix` when `self` is exactly one arc below it.
    pub fn index_under(&self, prefix: &Oid) -> Option<u32> {
        if self.0.len() == prefix.0.len() + 1 && self.0.starts_with(&prefix.0) {
            self.0.last().copied()
        } else {
            None
        }
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.0 {
            write!(f, ".{a}")?;
        }
        Ok(())
    }
}

impl FromStr for Oid {
    type Err = String;

    /// Parses dotted numeric form, with or without the leading dot.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let arcs = s
            .split('.')
            .map(|p| {
                p.parse::<u32>()
                    .map_err(|_| format!("bad OID arc {p:?} in {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ber::oid_content(&arcs).is_none() {
            return Err(format!("not an encodable OID: {s:?}"));
        }
        Ok(Oid(arcs))
    }
}

impl From<&[u32]> for Oid {
    fn from(a: &[u32]) -> Self {
        Oid(a.to_vec())
    }
}

/// A variable's value, including SNMPv2 exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value {
    /// INTEGER (also enumerations).
    Integer(i64),
    /// OCTET STRING.
    OctetString(Vec<u8>),
    /// NULL (the value of every request varbind).
    Null,
    /// OBJECT IDENTIFIER.
    ObjectId(Oid),
    /// IpAddress.
    IpAddress([u8; 4]),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Gauge32(u32),
    /// TimeTicks (hundredths of a second).
    TimeTicks(u32),
    /// Opaque.
    Opaque(Vec<u8>),
    /// Counter64.
    Counter64(u64),
    /// The object is not implemented here (v2c/v3 exception).
    NoSuchObject,
    /// The object exists but not this instance (v2c/v3 exception).
    NoSuchInstance,
    /// A GETNEXT ran off the end of the agent's view.
    EndOfMibView,
}

impl Value {
    /// Whether this is an exception (`noSuchObject`, `noSuchInstance`,
    /// `endOfMibView`) rather than data.
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            Value::NoSuchObject | Value::NoSuchInstance | Value::EndOfMibView
        )
    }

    /// The value as a signed number, for any integer-like type.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(v) => Some(*v),
            Value::Counter32(v) | Value::Gauge32(v) | Value::TimeTicks(v) => Some(i64::from(*v)),
            Value::Counter64(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// A variable binding: an OID and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarBind {
    /// The variable.
    pub oid: Oid,
    /// Its value (`Null` in requests other than SET).
    pub value: Value,
}

impl VarBind {
    /// A varbind.
    pub fn new(oid: Oid, value: Value) -> Self {
        VarBind { oid, value }
    }

    /// A varbind with a NULL value, as GET and GETNEXT send.
    pub fn null(oid: Oid) -> Self {
        VarBind {
            oid,
            value: Value::Null,
        }
    }
}

/// Which PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PduType {
    /// GetRequest.
    Get,
    /// GetNextRequest.
    GetNext,
    /// Response.
    Response,
    /// SetRequest.
    Set,
    /// GetBulkRequest (v2c/v3).
    GetBulk,
    /// InformRequest.
    Inform,
    /// SNMPv2-Trap.
    TrapV2,
    /// Report (v3: USM errors and discovery).
    Report,
}

impl PduType {
    fn tag(self) -> u8 {
        match self {
            PduType::Get => tag::GET,
            PduType::GetNext => tag::GET_NEXT,
            PduType::Response => tag::RESPONSE,
            PduType::Set => tag::SET,
            PduType::GetBulk => tag::GET_BULK,
            PduType::Inform => tag::INFORM,
            PduType::TrapV2 => tag::TRAP_V2,
            PduType::Report => tag::REPORT,
        }
    }

    fn from_tag(t: u8) -> Option<PduType> {
        Some(match t {
            tag::GET => PduType::Get,
            tag::GET_NEXT => PduType::GetNext,
            tag::RESPONSE => PduType::Response,
            tag::SET => PduType::Set,
            tag::GET_BULK => PduType::GetBulk,
            tag::INFORM => PduType::Inform,
            tag::TRAP_V2 => PduType::TrapV2,
            tag::REPORT => PduType::Report,
            _ => return None,
        })
    }
}

/// A PDU. For GetBulk, `error_status` carries non-repeaters and
/// `error_index` max-repetitions, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// Which PDU.
    pub kind: PduType,
    /// Request id, echoed by the agent.
    pub request_id: i32,
    /// Error status (0: noError).
    pub error_status: i64,
    /// 1-based index of the varbind the error is about (0: none).
    pub error_index: i64,
    /// The variable bindings.
    pub varbinds: Vec<VarBind>,
}

impl Pdu {
    /// A request PDU of `kind` for `varbinds`.
    pub fn request(kind: PduType, request_id: i32, varbinds: Vec<VarBind>) -> Self {
        Pdu {
            kind,
            request_id,
            error_status: 0,
            error_index: 0,
            varbinds,
        }
    }
}

/// SNMP protocol version numbers as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// SNMPv1 (0).
    V1,
    /// SNMPv2c (1).
    V2c,
    /// SNMPv3 (3).
    V3,
}

impl Version {
    pub(crate) fn wire(self) -> i64 {
        match self {
            Version::V1 => 0,
            Version::V2c => 1,
            Version::V3 => 3,
        }
    }
}

/// A community-based (v1 or v2c) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunityMessage {
    /// `V1` or `V2c`.
    pub version: Version,
    /// The community string (a shared secret: never log it).
    pub community: Vec<u8>,
    /// The PDU.
    pub pdu: Pdu,
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

fn encode_oid(out: &mut Vec<u8>, oid: &Oid) -> Result<(), EncodeError> {
    let c = ber::oid_content(oid.arcs())
        .ok_or_else(|| EncodeError(format!("OID {oid} cannot be encoded")))?;
    ber::write_tlv(out, tag::OID, &c);
    Ok(())
}

fn encode_value(out: &mut Vec<u8>, v: &Value) -> Result<(), EncodeError> {
    match v {
        Value::Integer(i) => ber::write_integer(out, *i),
        Value::OctetString(s) => ber::write_octets(out, s),
        Value::Null => ber::write_tlv(out, tag::NULL, &[]),
        Value::ObjectId(o) => encode_oid(out, o)?,
        Value::IpAddress(a) => ber::write_tlv(out, tag::IP_ADDRESS, a),
        Value::Counter32(c) => {
            ber::write_tlv(out, tag::COUNTER32, &ber::unsigned_content(u64::from(*c)))
        }
        Value::Gauge32(c) => {
            ber::write_tlv(out, tag::GAUGE32, &ber::unsigned_content(u64::from(*c)))
        }
        Value::TimeTicks(c) => {
            ber::write_tlv(out, tag::TIMETICKS, &ber::unsigned_content(u64::from(*c)))
        }
        Value::Opaque(s) => ber::write_tlv(out, tag::OPAQUE, s),
        Value::Counter64(c) => ber::write_tlv(out, tag::COUNTER64, &ber::unsigned_content(*c)),
        Value::NoSuchObject => ber::write_tlv(out, tag::NO_SUCH_OBJECT, &[]),
        Value::NoSuchInstance => ber::write_tlv(out, tag::NO_SUCH_INSTANCE, &[]),
        Value::EndOfMibView => ber::write_tlv(out, tag::END_OF_MIB_VIEW, &[]),
    }
    Ok(())
}

/// Encodes a PDU (tag, length and body).
pub fn encode_pdu(pdu: &Pdu) -> Result<Vec<u8>, EncodeError> {
    let mut vbs = Vec::new();
    for vb in &pdu.varbinds {
        let mut one = Vec::new();
        encode_oid(&mut one, &vb.oid)?;
        encode_value(&mut one, &vb.value)?;
        ber::write_tlv(&mut vbs, tag::SEQUENCE, &one);
    }
    let mut body = Vec::with_capacity(vbs.len() + 16);
    ber::write_integer(&mut body, i64::from(pdu.request_id));
    ber::write_integer(&mut body, pdu.error_status);
    ber::write_integer(&mut body, pdu.error_index);
    ber::write_tlv(&mut body, tag::SEQUENCE, &vbs);
    let mut out = Vec::with_capacity(body.len() + 4);
    ber::write_tlv(&mut out, pdu.kind.tag(), &body);
    Ok(out)
}

/// Encodes a v1/v2c message.
pub fn encode_community_message(msg: &CommunityMessage) -> Result<Vec<u8>, EncodeError> {
    if msg.version == Version::V3 {
        return Err(EncodeError(
            "SNMPv3 messages are built by the usm module".into(),
        ));
    }
    let mut body = Vec::new();
    ber::write_integer(&mut body, msg.version.wire());
    ber::write_octets(&mut body, &msg.community);
    body.extend_from_slice(&encode_pdu(&msg.pdu)?);
    let mut out = Vec::with_capacity(body.len() + 4);
    ber::write_tlv(&mut out, tag::SEQUENCE, &body);
    if out.len() > MAX_MESSAGE {
        return Err(EncodeError(format!(
            "message of {} bytes exceeds {MAX_MESSAGE}",
            out.len()
        )));
    }
    Ok(out)
}

fn decode_value(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let tlv = r.read_tlv()?;
    let bad = |reason| DecodeError {
        reason,
        offset: tlv.start,
    };
    let u32_of = |max| -> Result<u32, DecodeError> {
        let v = ber::decode_unsigned(&tlv, max)?;
        u32::try_from(v).map_err(|_| bad("32-bit value out of range"))
    };
    let empty = |v: Value| -> Result<Value, DecodeError> {
        if tlv.content.is_empty() {
            Ok(v)
        } else {
            Err(bad("exception value with content"))
        }
    };
    Ok(match tlv.tag {
        tag::INTEGER => Value::Integer(ber::decode_i64(&tlv)?),
        tag::OCTET_STRING => Value::OctetString(tlv.content.to_vec()),
        tag::NULL => empty(Value::Null)?,
        tag::OID => Value::ObjectId(Oid(ber::decode_oid(&tlv)?)),
        tag::IP_ADDRESS => Value::IpAddress(
            <[u8; 4]>::try_from(tlv.content).map_err(|_| bad("IpAddress is not 4 bytes"))?,
        ),
        tag::COUNTER32 => Value::Counter32(u32_of(4)?),
        tag::GAUGE32 => Value::Gauge32(u32_of(4)?),
        tag::TIMETICKS => Value::TimeTicks(u32_of(4)?),
        tag::OPAQUE => Value::Opaque(tlv.content.to_vec()),
        tag::COUNTER64 => Value::Counter64(ber::decode_unsigned(&tlv, 8)?),
        tag::NO_SUCH_OBJECT => empty(Value::NoSuchObject)?,
        tag::NO_SUCH_INSTANCE => empty(Value::NoSuchInstance)?,
        tag::END_OF_MIB_VIEW => empty(Value::EndOfMibView)?,
        _ => return Err(bad("unknown value type")),
    })
}

/// Decodes a PDU from `r` (one TLV).
pub(crate) fn decode_pdu(r: &mut Reader<'_>) -> Result<Pdu, DecodeError> {
    let at = r.offset();
    let tlv = r.read_tlv()?;
    let kind = PduType::from_tag(tlv.tag).ok_or(DecodeError {
        reason: "not a supported PDU type",
        offset: at,
    })?;
    let mut body = tlv.reader();
    let rid = body.integer("request-id is not an INTEGER")?;
    let request_id = i32::try_from(rid).map_err(|_| body.err("request-id out of range"))?;
    let error_status = body.integer("error-status is not an INTEGER")?;
    let error_index = body.integer("error-index is not an INTEGER")?;
    let mut list = body.sequence("varbind list is not a SEQUENCE")?;
    let mut varbinds = Vec::new();
    while !list.is_empty() {
        if varbinds.len() >= MAX_VARBINDS {
            return Err(list.err("too many varbinds"));
        }
        let mut vb = list.sequence("varbind is not a SEQUENCE")?;
        let oid = Oid(vb.oid("varbind name is not an OID")?);
        let value = decode_value(&mut vb)?;
        if !vb.is_empty() {
            return Err(vb.err("trailing data in varbind"));
        }
        varbinds.push(VarBind { oid, value });
    }
    if !body.is_empty() {
        return Err(body.err("trailing data in PDU"));
    }
    Ok(Pdu {
        kind,
        request_id,
        error_status,
        error_index,
        varbinds,
    })
}

/// The version field of any SNMP message, without decoding the rest.
pub fn peek_version(bytes: &[u8]) -> Result<i64, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError {
            reason: "message larger than 65507 bytes",
            offset: 0,
        });
    }
    let mut r = Reader::new(bytes);
    let mut msg = r.sequence("message is not a SEQUENCE")?;
    msg.integer("version is not an INTEGER")
}

/// Decodes a v1/v2c message. Never panics; rejects anything malformed,
/// larger than [`MAX_MESSAGE`] or with more than [`MAX_VARBINDS`] varbinds.
pub fn decode_community_message(bytes: &[u8]) -> Result<CommunityMessage, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError {
            reason: "message larger than 65507 bytes",
            offset: 0,
        });
    }
    let mut r = Reader::new(bytes);
    let mut msg = r.sequence("message is not a SEQUENCE")?;
    if !r.is_empty() {
        return Err(r.err("trailing data after message"));
    }
    let version = match msg.integer("version is not an INTEGER")? {
        0 => Version::V1,
        1 => Version::V2c,
        _ => return Err(msg.err("not an SNMPv1/v2c message")),
    };
    let community = msg
        .octets("community is not an OCTET STRING")?
        .content
        .to_vec();
    let pdu = decode_pdu(&mut msg)?;
    if !msg.is_empty() {
        return Err(msg.err("trailing data in message"));
    }
    Ok(CommunityMessage {
        version,
        community,
        pdu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `snmpget -v2c -c public 127.0.0.1:PORT .1.3.6.1.2.1.33.1.4.1.0` as
    /// sent by net-snmp 5.9.3 (captured from a UDP socket on this machine).
    const NETSNMP_GET: &[u8] = &[
        0x30, 0x2b, 0x02, 0x01, 0x01, 0x04, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0xa0, 0x1e,
        0x02, 0x04, 0x0b, 0xdd, 0x6b, 0x32, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x10, 0x30,
        0x0e, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x21, 0x01, 0x04, 0x01, 0x00, 0x05, 0x00,
    ];

    #[test]
    fn encodes_like_net_snmp() {
        let msg = CommunityMessage {
            version: Version::V2c,
            community: b"public".to_vec(),
            pdu: Pdu::request(
                PduType::Get,
                0x0bdd6b32,
                vec![VarBind::null(".1.3.6.1.2.1.33.1.4.1.0".parse().unwrap())],
            ),
        };
        let enc = encode_community_message(&msg).unwrap();
        assert_eq!(enc, NETSNMP_GET, "byte-for-byte what net-snmp sends");
        let dec = decode_community_message(&enc).unwrap();
        assert_eq!(dec, msg);
        // And the captured request decodes to the same shape.
        let cap = decode_community_message(NETSNMP_GET).unwrap();
        assert_eq!(cap.version, Version::V2c);
        assert_eq!(cap.community, b"public");
        assert_eq!(cap.pdu.kind, PduType::Get);
        assert_eq!(cap.pdu.request_id, 0x0bdd6b32);
        assert_eq!(cap.pdu.varbinds.len(), 1);
    }

    /// net-snmp 5.9.3 `snmpd` answering that request (through a
    /// `pass_persist` handler serving upsOutputSource = battery(5)).
    const NETSNMP_RESPONSE: &[u8] = &[
        0x30, 0x2c, 0x02, 0x01, 0x01, 0x04, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0xa2, 0x1f,
        0x02, 0x04, 0x0e, 0xa2, 0xfb, 0x74, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x11, 0x30,
        0x0f, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x21, 0x01, 0x04, 0x01, 0x00, 0x02, 0x01,
        0x05,
    ];

    #[test]
    fn decodes_recorded_snmpd_response() {
        let m = decode_community_message(NETSNMP_RESPONSE).unwrap();
        assert_eq!(m.version, Version::V2c);
        assert_eq!(m.pdu.kind, PduType::Response);
        assert_eq!(m.pdu.request_id, 0x0ea2fb74);
        assert_eq!(m.pdu.error_status, 0);
        assert_eq!(
            m.pdu.varbinds,
            vec![VarBind::new(
                ".1.3.6.1.2.1.33.1.4.1.0".parse().unwrap(),
                Value::Integer(5)
            )]
        );
        let s = crate::mib::map_status(crate::mib::Mib::UpsMib, &m.pdu.varbinds, &[]).unwrap();
        assert!(s.on_battery());
    }

    #[test]
    fn decodes_exceptions_and_types() {
        let vbs = vec![
            VarBind::new("1.3.6.1.2.1.33.1.2.1.0".parse().unwrap(), Value::Integer(3)),
            VarBind::new(
                "1.3.6.1.2.1.33.1.2.3.0".parse().unwrap(),
                Value::NoSuchObject,
            ),
            VarBind::new(
                "1.3.6.1.2.1.33.1.2.4.0".parse().unwrap(),
                Value::NoSuchInstance,
            ),
            VarBind::new(
                "1.3.6.1.4.1.318.1.1.1.2.2.3.0".parse().unwrap(),
                Value::TimeTicks(360_000),
            ),
            VarBind::new(
                "1.3.6.1.2.1.1.3.0".parse().unwrap(),
                Value::Counter64(u64::MAX),
            ),
            VarBind::new(
                "1.3.6.1.2.1.1.5.0".parse().unwrap(),
                Value::OctetString(b"ups1".to_vec()),
            ),
            VarBind::new(
                "1.3.6.1.2.1.4.20.1.1.0".parse().unwrap(),
                Value::IpAddress([127, 0, 0, 1]),
            ),
            VarBind::new(
                "1.3.6.1.2.1.1.2.0".parse().unwrap(),
                Value::ObjectId("1.3.6.1.4.1.318".parse().unwrap()),
            ),
            VarBind::new("1.3.6.1.2.1.1.9.0".parse().unwrap(), Value::EndOfMibView),
            VarBind::new(
                "1.3.6.1.2.1.1.8.0".parse().unwrap(),
                Value::Gauge32(0x8000_0000),
            ),
        ];
        let msg = CommunityMessage {
            version: Version::V1,
            community: b"c".to_vec(),
            pdu: Pdu {
                kind: PduType::Response,
                request_id: -5,
                error_status: 0,
                error_index: 0,
                varbinds: vbs,
            },
        };
        let enc = encode_community_message(&msg).unwrap();
        assert_eq!(decode_community_message(&enc).unwrap(), msg);
        // Every strict prefix is an error, not a panic.
        for n in 0..enc.len() {
            assert!(decode_community_message(&enc[..n]).is_err(), "prefix {n}");
        }
        // Trailing garbage is refused.
        let mut more = enc.clone();
        more.push(0);
        assert!(decode_community_message(&more).is_err());
    }

    #[test]
    fn rejects_v3_and_traps() {
        let mut body = Vec::new();
        ber::write_integer(&mut body, 3);
        let mut out = Vec::new();
        ber::write_tlv(&mut out, tag::SEQUENCE, &body);
        assert_eq!(peek_version(&out).unwrap(), 3);
        assert!(decode_community_message(&out).is_err());
        let trap = [
            0x30, 0x0b, 0x02, 0x01, 0x00, 0x04, 0x00, 0xa4, 0x04, 0x02, 0x01, 0x00, 0x30,
        ];
        assert!(decode_community_message(&trap).is_err());
    }

    #[test]
    fn oid_text() {
        let o: Oid = ".1.3.6.1.2.1.33".parse().unwrap();
        assert_eq!(o.to_string(), ".1.3.6.1.2.1.33");
        assert!(o.child(1).is_under(&o));
        assert_eq!(o.child(7).index_under(&o), Some(7));
        assert!("1.x".parse::<Oid>().is_err());
        assert!("5.1".parse::<Oid>().is_err());
    }
}
