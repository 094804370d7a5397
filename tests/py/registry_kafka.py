"""Avro and Protobuf through a schema registry with Confluent's own client (confluent-kafka),
for the end-to-end tests: records written and read by code nobody here wrote.

  registry_kafka.py produce BOOTSTRAP REGISTRY TOPIC SCHEMA_FILE < records.jsonl
      Writes each JSON line as an Avro record (AvroSerializer, registering the schema under
      TOPIC-value), round-robin over the partitions.
  registry_kafka.py register REGISTRY SUBJECT SCHEMA_FILE
      Registers the schema under SUBJECT; prints its id.
  registry_kafka.py decode REGISTRY TOPIC < values.hex
      Decodes record values of TOPIC (one hex line each, as the test read them from Kafka)
      with AvroDeserializer; prints each as a JSON line.
  registry_kafka.py proto-produce BOOTSTRAP REGISTRY TOPIC < readings.jsonl
  registry_kafka.py proto-register REGISTRY SUBJECT
  registry_kafka.py proto-decode REGISTRY TOPIC < values.hex
      The same with Protobuf: `tributary.iot.SensorReading` messages (ProtobufSerializer,
      ProtobufDeserializer), the message class made at run time from its descriptor.
  registry_kafka.py produce-keyed BOOTSTRAP REGISTRY TOPIC KEY_SCHEMA_FILE < changes.jsonl
      Writes each line {"key": ..., "value": ...} with the key as an Avro record
      (AvroSerializer, subject TOPIC-key) and the value as JSON text, or no value for null (a
      tombstone), to partition 0.
  registry_kafka.py json-produce BOOTSTRAP REGISTRY TOPIC SCHEMA_FILE < records.jsonl
  registry_kafka.py json-decode REGISTRY TOPIC < values.hex
      The same with JSON Schema (JSONSerializer, JSONDeserializer: both validate each
      document against the schema, the deserialiser against the one the record's id names).
"""

import base64
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from confluent_kafka.serialization import MessageField, SerializationContext


def produce(bootstrap, registry, topic, schema_file, kind=AvroSerializer):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    # TopicNameStrategy, named: the client's default (ASSOCIATED) first asks for an
    # associations API that Apicurio does not serve (and sometimes does not answer).
    conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}
    with open(schema_file) as f:
        serialize = kind(f.read(), client, conf=conf) if kind is JSONSerializer \
            else kind(client, f.read(), conf=conf)
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


def produce_keyed(bootstrap, registry, topic, key_schema_file):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}
    with open(key_schema_file) as f:
        serialize = AvroSerializer(client, f.read(), conf=conf)
    producer = Producer({"bootstrap.servers": bootstrap})
    context = SerializationContext(topic, MessageField.KEY)
    for line in sys.stdin:
        if line.strip():
            change = json.loads(line)
            value = None if change["value"] is None else json.dumps(change["value"]).encode()
            producer.produce(topic, key=serialize(change["key"], context), value=value,
                             partition=0)
    if producer.flush(60) != 0:
        sys.exit("records not delivered")


def register(registry, subject, schema_file):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    with open(schema_file) as f:
        print(client.register_schema(subject, Schema(f.read(), "AVRO")))


def decode(registry, topic, kind=AvroDeserializer):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    # The JSON deserialiser takes the schema of each record's id from the registry.
    deserialize = kind(None, schema_registry_client=client) if kind is JSONDeserializer \
        else kind(client)
    context = SerializationContext(topic, MessageField.VALUE)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(deserialize(bytes.fromhex(line.strip()), context)))


def reading_class():
    """`tributary.iot.SensorReading`, as tests/tests/formats_protobuf.rs expects it."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tributary/iot/reading.proto", package="tributary.iot", syntax="proto3")
    message = file.message_type.add(name="SensorReading")
    for number, (name, kind) in enumerate([("device", f.TYPE_UINT32), ("site", f.TYPE_UINT32),
                                           ("sensor", f.TYPE_STRING), ("value", f.TYPE_DOUBLE),
                                           ("ts", f.TYPE_UINT64)], start=1):
        message.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tributary.iot.SensorReading"))


def proto_produce(bootstrap, registry, topic):
    cls = reading_class()
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC",
            "use.deprecated.format": False}
    serialize = ProtobufSerializer(cls, client, conf)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    partitions = len(producer.list_topics(topic, timeout=30).topics[topic].partitions)
    context = SerializationContext(topic, MessageField.VALUE)
    for n, line in enumerate(sys.stdin):
        if line.strip():
            producer.produce(topic, value=serialize(cls(**json.loads(line)), context),
                             partition=n % partitions)
            producer.poll(0)
    if producer.flush(60) != 0:
        sys.exit("records not delivered")


def proto_register(registry, subject):
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    file = reading_class().DESCRIPTOR.file
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    schema = base64.standard_b64encode(proto.SerializeToString()).decode("ascii")
    print(client.register_schema(subject, Schema(schema, "PROTOBUF")))


def proto_decode(registry, topic):
    cls = reading_class()
    deserialize = ProtobufDeserializer(cls, {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    for line in sys.stdin:
        if line.strip():
            m = deserialize(bytes.fromhex(line.strip()), context)
            print(json.dumps({f.name: getattr(m, f.name) for f in cls.DESCRIPTOR.fields}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    commands = {"produce": produce, "produce-keyed": produce_keyed, "register": register,
                "decode": decode,
                "proto-produce": proto_produce, "proto-register": proto_register,
                "proto-decode": proto_decode,
                "json-produce": lambda *a: produce(*a, kind=JSONSerializer),
                "json-decode": lambda *a: decode(*a, kind=JSONDeserializer)}
    commands[command](*args)
