//! upsd behind a relay that loses its state the way a NAT or firewall does
//! (traffic swallowed, no FIN, no RST), then lets new connections through:
//! every call returns within its deadline during the blip, and the first
//! call after it succeeds on a fresh connection (issue 20's drill for NUT).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::executor::block_on;
use upsvisor_core::{ErrorKind, PowerDevice, PowerSource};
use upsvisor_nut::NutDevice;
use upsvisor_testkit::relay::Relay;

#[test]
fn half_open_upsd_connection_times_out_and_the_next_call_reconnects() {
    let Some(nut) = Nut::start(&[("ups", "ups.dev", simple_dev("OL", 100))], None) else {
        return;
    };
    nut.wait_ready("ups");
    let relay = Relay::start(format!("127.0.0.1:{}", nut.port).parse().unwrap());
    // call_timeout 3 s (the helper's default for tests).
    let dev = NutDevice::new(nut.cfg("ups").port(relay.port)).unwrap();
    let deadline = nut.cfg("ups").call_timeout_value();
    let st = block_on(dev.status()).expect("through the relay");
    assert_eq!(st.source, PowerSource::OnLine);

    relay.blip();
    for round in 0..2 {
        let t0 = Instant::now();
        let e = block_on(dev.status()).expect_err("nothing comes back during the blip");
        assert!(
            matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unreachable),
            "round {round}: {e}"
        );
        assert!(
            t0.elapsed() <= deadline + Duration::from_millis(1500),
            "round {round}: returned after {:?}, deadline {deadline:?}",
            t0.elapsed()
        );
    }

    relay.recover();
    let t0 = Instant::now();
    let st = block_on(dev.status()).expect("the first call after the blip succeeds");
    assert_eq!(st.source, PowerSource::OnLine);
    assert!(
        t0.elapsed() <= deadline,
        "it did not wait on the dead connection: {:?}",
        t0.elapsed()
    );
}
