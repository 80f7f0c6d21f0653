package com.payouts.consumer;

import com.google.protobuf.InvalidProtocolBufferException;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import payout_manager.v1.PayoutManager.Event;

/**
 * Reads pm-events-payout in a consumer group and prints each event as one tab-separated line:
 * payout id, sequence id, status, amount.
 *
 * <p>Usage: {@code java -jar events-consumer.jar BOOTSTRAP_SERVERS TOPIC GROUP [MAX_EVENTS
 * [IDLE_SECONDS]]}. Stops after MAX_EVENTS events, or when none arrives for IDLE_SECONDS (default
 * 30); without MAX_EVENTS it reads until then. Delivery is at least once, so, as SPEC 3 asks of
 * every consumer, an event at or below the highest sequence id already applied for its payout is
 * a repeat and is skipped.
 */
public final class EventsConsumer {
  private EventsConsumer() {}

  public static void main(String[] args) throws InvalidProtocolBufferException {
    if (args.length < 3) {
      System.err.println("usage: events-consumer BOOTSTRAP_SERVERS TOPIC GROUP [MAX_EVENTS [IDLE_SECONDS]]");
      System.exit(2);
    }
    long maxEvents = args.length > 3 ? Long.parseLong(args[3]) : Long.MAX_VALUE;
    Duration idle = Duration.ofSeconds(args.length > 4 ? Long.parseLong(args[4]) : 30);

    Properties config = new Properties();
    config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    config.put(ConsumerConfig.GROUP_ID_CONFIG, args[2]);
    config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());

    java.util.Map<String, Long> applied = new java.util.HashMap<>();
    long printed = 0;
    try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(config)) {
      consumer.subscribe(List.of(args[1]));
      Instant lastEvent = Instant.now();
      while (printed < maxEvents && Duration.between(lastEvent, Instant.now()).compareTo(idle) < 0) {
        for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(200))) {
          lastEvent = Instant.now();
          Event event = Event.parseFrom(record.value());
          if (event.getSequenceId() <= applied.getOrDefault(event.getPayoutId(), 0L)) {
            continue;
          }
          applied.put(event.getPayoutId(), event.getSequenceId());
          System.out.printf(
              "%s\t%d\t%s\t%d%n",
              event.getPayoutId(),
              event.getSequenceId(),
              event.getPayout().getStatus().name(),
              event.getPayout().getAmount());
          printed++;
        }
        consumer.commitSync();
      }
    }
    System.out.flush();
  }
}
