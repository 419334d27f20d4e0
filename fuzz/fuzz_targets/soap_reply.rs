//! Fuzzes upsvisor-soap's reply pipeline: envelope, faults, property
//! collector pages (tree and streamed) and the VM/host/task readers built
//! on them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_soap::codec;
use upsvisor_soap::xml::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    // The streaming inventory reader (the differential check against the
    // tree path is the `soap_inventory` target).
    let _ = upsvisor_soap::inventory::parse_inventory_page(
        data,
        limits,
        "RetrievePropertiesExResponse",
    );
    let Ok(el) = codec::parse_envelope(data, limits) else {
        return;
    };
    let _ = codec::parse_service_content(&el);
    let _ = codec::parse_moref(&el);
    let _ = codec::parse_update_set(&el);
    if let Ok(page) = codec::parse_retrieve_result(el) {
        for o in &page.objects {
            let _ = codec::vm_record(o);
            let _ = codec::host_state(o);
            let _ = codec::task_state(o);
        }
    }
});
