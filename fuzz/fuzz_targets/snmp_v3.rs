//! Fuzzes the SNMPv3 receive path with fixed localised keys: decode, MAC
//! check, decryption, decrypted scoped-PDU decode and report
//! classification.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use upsvisor_snmp::usm::{self, Keys, MasterKeys, ScopedPduData, UsmReport};
use upsvisor_snmp::{AuthProtocol, UsmUser};

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        MasterKeys::new(&UsmUser::auth_priv("ups", AuthProtocol::Sha1, "authpass1", "privpass1"))
            .localize(b"\x80\x00\x1f\x88\x80engine")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = usm::decode_v3_message(data) else {
        return;
    };
    let k = keys();
    let _ = k.verify(data, m.auth_params_at, &m.auth_params);
    let scoped = match &m.data {
        ScopedPduData::Plain(sp) => Some(sp.clone()),
        ScopedPduData::Encrypted(c) => k
            .decrypt(m.engine_boots, m.engine_time, &m.priv_params, c)
            .and_then(|p| usm::decode_scoped_pdu(&p).ok()),
    };
    if let Some(sp) = scoped {
        if let Some(r) = UsmReport::classify(&sp.pdu) {
            let _ = r.describe();
        }
    }
});
