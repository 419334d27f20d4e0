//! Fuzzes upsvisor-soap's streaming inventory reader against the tree
//! path it replaced: both must give the same answer (records or error)
//! for every input, under tight and default limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsvisor_soap::inventory::{parse_inventory_page, parse_inventory_page_via_tree};
use upsvisor_soap::xml::Limits;

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        },
        Limits {
            max_bytes: 1 << 20,
            max_depth: 8,
            max_elements: 64,
        },
    ] {
        for want in [
            "RetrievePropertiesExResponse",
            "ContinueRetrievePropertiesExResponse",
        ] {
            assert_eq!(
                parse_inventory_page(data, limits, want),
                parse_inventory_page_via_tree(data, limits, want)
            );
        }
    }
});
