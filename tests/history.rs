//! History's memory budget (`max_history_bytes`): past it the oldest events of the largest
//! topics are evicted first, the evictions are counted in `/metrics`, and a resume that needed
//! an evicted event is told so with a gap — never given wrong data.
mod common;

use common::*;

/// Long-polls `topic` from `id` (no waiting) and returns the answer's events.
fn poll_from(s: &Server, topic: &str, id: &str) -> Vec<serde_json::Value> {
    let r = request(s, &format!("GET /sub/{topic}?last_event_id={id}&timeout=0&max=10000 HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"].as_array().expect("events").clone()
}

#[test]
fn over_the_budget_the_largest_topics_lose_their_oldest_events_and_resumes_get_gaps() {
    // 256 KiB for the whole node: 128 KiB per owner.
    each_driver(2, &["--max-history-bytes", "262144", "--history", "1000"], |s| {
        let mut p = Publisher::new(s);
        let small: Vec<String> = (0..3).map(|i| p.publish("small", &format!("s{i}"))).collect();
        let big_data = "b".repeat(4096);
        let big: Vec<String> = (0..200).map(|_| p.publish("big", &big_data)).collect();

        wait_until("evictions counted", || metric(s, "herald_history_evictions_total") > 0.0);
        let held = metric(s, "herald_history_bytes");
        assert!(held > 0.0 && held <= 262_144.0, "history holds {held} bytes against a budget of 262144");

        // The big topic lost its oldest events: resuming from its first id is a gap, then the
        // newest events, in order, ending at the last one published.
        let events = poll_from(s, "big", &big[0]);
        assert_eq!(events[0]["type"], "herald.gap", "{}", events[0]);
        let gap: serde_json::Value = serde_json::from_str(events[0]["data"].as_str().unwrap()).unwrap();
        assert_eq!(gap["missed_from"], big[0].as_str());
        let ids: Vec<&str> = events[1..].iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert!(!ids.is_empty() && ids.len() < 199, "{} of 199 events kept", ids.len());
        assert_eq!(ids, big[big.len() - ids.len()..], "the newest events, in order");
        for e in &events[1..] {
            assert_eq!(e["data"], big_data.as_str());
        }
        // The small topic kept everything: an exact replay, no gap.
        let events = poll_from(s, "small", &small[0]);
        let data: Vec<&str> = events.iter().map(|e| e["data"].as_str().unwrap()).collect();
        assert_eq!(data, ["s1", "s2"]);
    });
}
