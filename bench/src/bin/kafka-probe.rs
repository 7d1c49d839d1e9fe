//! `kafka-probe`: the floor for the Kafka hops — produce → acknowledged and produce →
//! consumed latency through the same broker, with the relay's producer settings
//! (idempotent, acks=all, linger 0) and core-app's consumer settings (fetch.wait.max.ms 10),
//! at a fixed (open-loop) rate. Prints a JSON summary on stdout.

use bench::stats::Summary;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "OSAGO_KAFKA_BROKERS", default_value = "127.0.0.1:59092")]
    brokers: String,
    /// Messages per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Payload size in bytes (a quote event with an offer is about 1.5 KiB).
    #[arg(long, default_value_t = 1500)]
    size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = format!("bench.probe.{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin.create_topics(&[NewTopic::new(&topic, 6, TopicReplication::Fixed(1))], &options).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000")
        .create()?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("probe-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let total = (args.rate * args.seconds).round() as usize;
    // Warm up: a message to every partition, produced and consumed, so that metadata, the
    // idempotent producer's id, partition leaders and the consumer's fetch are all in place
    // before the clock starts (a fresh topic takes seconds to settle on a loaded machine).
    for p in 0..6 {
        let record = FutureRecord::<str, [u8]>::to(&topic).partition(p).payload(&[0u8; 4]);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    }
    let mut warm = 0;
    while warm < 6 {
        tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        warm += 1;
    }
    let consuming = tokio::spawn(async move {
        let mut e2e = Vec::with_capacity(total);
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.seconds + 15.0);
        while e2e.len() < total {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => {
                    let now = bench::now_us();
                    if let Some(p) = m.payload()
                        && p.len() >= 8
                    {
                        let sent = i64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                        e2e.push((now - sent) as f64 / 1000.0);
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
        e2e
    });
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        ticks.tick().await;
        let producer = producer.clone();
        let topic = topic.clone();
        let size = args.size;
        sends.push(tokio::spawn(async move {
            let sent = bench::now_us();
            let mut payload = vec![b'x'; size.max(8)];
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            let key = format!("k{}", i % 64);
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer.send(record, Duration::from_secs(0)).await.ok().map(|_| (bench::now_us() - sent) as f64 / 1000.0)
        }));
    }
    let mut ack = Vec::with_capacity(total);
    for s in sends {
        if let Ok(Some(ms)) = s.await {
            ack.push(ms);
        }
    }
    let e2e = consuming.await?;
    let _ = admin.delete_topics(&[&topic], &options).await;
    let out = serde_json::json!({
        "rate": args.rate, "seconds": args.seconds, "size": args.size, "sent": total,
        "produce_ack_ms": Summary::of(&ack),
        "produce_consume_ms": Summary::of(&e2e),
    });
    println!("{out}");
    Ok(())
}
