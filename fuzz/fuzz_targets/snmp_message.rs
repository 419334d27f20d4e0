//! Fuzzes the SNMP message decoders (v1/v2c community messages, SNMPv3
//! messages, scoped PDUs) and the MIB mapping of whatever decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_snmp::codec;
use upsvisor_snmp::mib::{self, Mib};
use upsvisor_snmp::usm;

fuzz_target!(|data: &[u8]| {
    let _ = codec::peek_version(data);
    if let Ok(m) = codec::decode_community_message(data) {
        for mib in [Mib::UpsMib, Mib::ApcUps, Mib::ApcPdu, Mib::EatonXups] {
            let rows = mib::outlet_rows(mib, &m.pdu.varbinds, &m.pdu.varbinds);
            let _ = mib::map_status(mib, &m.pdu.varbinds, &rows);
        }
        let _ = mib::detect(&m.pdu.varbinds);
    }
    let _ = usm::decode_v3_message(data);
    let _ = usm::decode_scoped_pdu(data);
});
