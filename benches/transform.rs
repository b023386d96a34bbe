//! JSON body transforms: a rename + convert (the seed's example) on a 1 KiB and a 64 KiB body,
//! against a plain serde_json `Value` parse and serialize of the same body (the baseline the
//! transform is built on), so the cost of the edits themselves shows.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringgate::config::Config;

fn body(items: usize) -> Vec<u8> {
    let list: Vec<serde_json::Value> =
        (0..items).map(|i| serde_json::json!({ "sku_id": format!("sku-{i}"), "price": "12.50", "qty": i % 7, "note": "x".repeat(8) })).collect();
    serde_json::to_vec(&serde_json::json!({ "user_id": 7, "total": "12.50", "items": list, "internal": "secret" })).unwrap()
}

fn bench(c: &mut Criterion) {
    let cfg = Config::parse(
        "[[services]]\nname = \"s\"\nupstreams = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npaths = [\"/\"]\nservice = \"s\"\n\
         [routes.transform.request]\njson = { rename = { \"user_id\" = \"userId\", \"items[*].sku_id\" = \"items[*].skuId\" }, \
         convert = { \"total\" = \"number\", \"items[*].price\" = \"number\" } }\n",
    )
    .unwrap();
    let edits = cfg.routes[0].transform.request.as_ref().unwrap().json.as_ref().unwrap().clone();
    let mut g = c.benchmark_group("json_transform");
    for (name, items) in [("1KiB", 16), ("64KiB", 1056)] {
        let b = body(items);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("value_roundtrip_{name}"), |x| {
            x.iter(|| {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                serde_json::to_vec(&v).unwrap()
            })
        });
        g.bench_function(format!("rename_convert_{name}"), |x| x.iter(|| ringgate::policy::transform::json_body(&b, &edits, &[]).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
