"""Avro through a schema registry with Confluent's own client (confluent-kafka), for the
end-to-end tests: records written and read by code nobody here wrote.

  avro_kafka.py produce BOOTSTRAP REGISTRY TOPIC SCHEMA_FILE < records.jsonl
      Writes each JSON line as an Avro record (AvroSerializer, registering the schema under
      TOPIC-value), round-robin over the partitions.
  avro_kafka.py register REGISTRY SUBJECT SCHEMA_FILE
      Registers the schema under SUBJECT; prints its id.
  avro_kafka.py decode REGISTRY TOPIC < values.hex
      Decodes record values of TOPIC (one hex line each, as the test read them from Kafka)
      with AvroDeserializer; prints each as a JSON line.
"""

import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def produce(bootstrap, registry, topic, schema_file):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    # TopicNameStrategy, named: the client's default (ASSOCIATED) first asks for an
    # associations API that Apicurio does not serve (and sometimes does not answer).
    conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}
    with open(schema_file) as f:
        serialize = AvroSerializer(client, f.read(), conf=conf)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    partitions = len(producer.list_topics(topic, timeout=30).topics[topic].partitions)
    context = SerializationContext(topic, MessageField.VALUE)
    for n, line in enumerate(sys.stdin):
        if line.strip():
            value = serialize(json.loads(line), context)
            while True:
                try:
                    producer.produce(topic, value=value, partition=n % partitions)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60) != 0:
        sys.exit("records not delivered")


def register(registry, subject, schema_file):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    with open(schema_file) as f:
        print(client.register_schema(subject, Schema(f.read(), "AVRO")))


def decode(registry, topic):
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry, "timeout": 30}))
    context = SerializationContext(topic, MessageField.VALUE)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(deserialize(bytes.fromhex(line.strip()), context)))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"produce": produce, "register": register, "decode": decode}[command](*args)
