//! Property tests: the decoders never panic on any input, and what the
//! encoders write decodes back to the same thing.

use proptest::prelude::*;
use upsvisor_snmp::codec::{self, CommunityMessage, Oid, Pdu, PduType, Value, VarBind, Version};
use upsvisor_snmp::mib::{self, Mib, OutletRow};
use upsvisor_snmp::usm::{self, MasterKeys, V3Request};
use upsvisor_snmp::{AuthProtocol, UsmUser};

fn arb_oid() -> impl Strategy<Value = Oid> {
    (
        0u32..3,
        0u32..40,
        prop::collection::vec(any::<u32>(), 0..20),
    )
        .prop_map(|(a, b, rest)| {
            let mut v = vec![a, b];
            v.extend(rest);
            Oid::new(v)
        })
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::OctetString),
        Just(Value::Null),
        arb_oid().prop_map(Value::ObjectId),
        any::<[u8; 4]>().prop_map(Value::IpAddress),
        any::<u32>().prop_map(Value::Counter32),
        any::<u32>().prop_map(Value::Gauge32),
        any::<u32>().prop_map(Value::TimeTicks),
        any::<u64>().prop_map(Value::Counter64),
        Just(Value::NoSuchObject),
        Just(Value::NoSuchInstance),
        Just(Value::EndOfMibView),
    ]
}

fn arb_varbinds() -> impl Strategy<Value = Vec<VarBind>> {
    prop::collection::vec(
        (arb_oid(), arb_value()).prop_map(|(o, v)| VarBind::new(o, v)),
        0..12,
    )
}

fn keys() -> usm::Keys {
    // Key derivation hashes a megabyte: do it once.
    use std::sync::OnceLock;
    static K: OnceLock<usm::Keys> = OnceLock::new();
    K.get_or_init(|| {
        MasterKeys::new(&UsmUser::auth_priv(
            "ups",
            AuthProtocol::Sha1,
            "authpass1",
            "privpass1",
        ))
        .localize(b"\x80\x00\x1f\x88\x80engine")
    })
    .clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::peek_version(&data);
        let _ = codec::decode_community_message(&data);
        let _ = usm::decode_scoped_pdu(&data);
        if let Ok(m) = usm::decode_v3_message(&data) {
            let k = keys();
            let _ = k.verify(&data, m.auth_params_at, &m.auth_params);
            if let usm::ScopedPduData::Encrypted(c) = &m.data {
                if let Some(p) = k.decrypt(m.engine_boots, m.engine_time, &m.priv_params, c) {
                    let _ = usm::decode_scoped_pdu(&p);
                }
            }
        }
    }

    /// Structured garbage: a valid SEQUENCE header over random content
    /// reaches deeper into the decoders than plain random bytes.
    #[test]
    fn framed_garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..300), v3 in any::<bool>()) {
        let mut data = vec![0x30];
        let len = body.len() + 3;
        if len < 128 { data.push(len as u8) } else { data.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]) }
        data.extend_from_slice(&[0x02, 0x01, if v3 { 3 } else { 1 }]);
        data.extend_from_slice(&body);
        let _ = codec::decode_community_message(&data);
        let _ = usm::decode_v3_message(&data);
    }

    #[test]
    fn community_roundtrip(vbs in arb_varbinds(), id in any::<i32>(), community in prop::collection::vec(any::<u8>(), 0..40), v1 in any::<bool>()) {
        let msg = CommunityMessage {
            version: if v1 { Version::V1 } else { Version::V2c },
            community,
            pdu: Pdu { kind: PduType::Response, request_id: id, error_status: 0, error_index: 0, varbinds: vbs },
        };
        let enc = codec::encode_community_message(&msg).unwrap();
        prop_assert_eq!(codec::decode_community_message(&enc).unwrap(), msg);
    }

    #[test]
    fn v3_roundtrip(vbs in arb_varbinds(), id in 0i32..i32::MAX, boots in 0u32..1000, time in 0u32..1_000_000, salt in any::<u64>()) {
        let k = keys();
        let pdu = Pdu::request(PduType::Set, id, vbs);
        let engine = b"\x80\x00\x1f\x88\x80engine";
        let enc = usm::encode_v3_request(&V3Request {
            msg_id: id, engine_id: engine, engine_boots: boots, engine_time: time,
            user: b"ups", keys: Some(&k), salt, pdu: &pdu,
        }).unwrap();
        let m = usm::decode_v3_message(&enc).unwrap();
        prop_assert!(k.verify(&enc, m.auth_params_at, &m.auth_params));
        let usm::ScopedPduData::Encrypted(c) = &m.data else { panic!("not encrypted") };
        let plain = k.decrypt(boots, time, &m.priv_params, c).unwrap();
        prop_assert_eq!(usm::decode_scoped_pdu(&plain).unwrap().pdu, pdu);
    }

    #[test]
    fn status_mapping_never_panics(vbs in arb_varbinds(), states in prop::collection::vec((1u32..100, any::<Option<i64>>()), 0..10)) {
        let rows: Vec<OutletRow> = states.into_iter().map(|(index, state)| OutletRow { index, state, name: None }).collect();
        for m in [Mib::UpsMib, Mib::ApcUps, Mib::ApcPdu, Mib::EatonXups] {
            if let Ok(s) = mib::map_status(m, &vbs, &rows) {
                if let Some(c) = s.charge_pct { prop_assert!((0.0..=100.0).contains(&c)); }
                if let Some(l) = s.load_pct { prop_assert!((0.0..=1000.0).contains(&l)); }
            }
            let _ = mib::detection_failure(&vbs);
            let _ = mib::outlet_rows(m, &vbs, &vbs);
            let _ = mib::detect(&vbs);
        }
    }
}
