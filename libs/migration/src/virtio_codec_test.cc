#include "migration/virtio_codec.h"

#include <catch2/catch.hpp>
#include <string>

using namespace migration;

namespace {

virtio::TransportState SomeTransport() {
  virtio::TransportState t;
  t.status = 15;
  t.driver_features = (1ULL << 32) | (1ULL << 34);
  t.config_generation = 7;
  virtio::QueueState q;
  q.size = 8;
  q.ready = q.active = true;
  q.desc = 0x1000;
  q.avail = 0x2000;
  q.used = 0x3000;
  q.next_avail = 65535;
  q.next_used = 3;
  q.avail_pos = 5;
  q.used_pos = 6;
  q.avail_wrap = false;
  q.in_flight = {0, 2, 0, 0, 1, 0, 0, 0};
  t.queues = {q, virtio::QueueState{}};
  return t;
}

}  // namespace

TEST_CASE("virtio codec: mmio and pci states survive a round trip") {
  virtio::MmioState m{SomeTransport(), 3, 1, 1, 0};
  auto back = DecodeMmio(EncodeMmio(m));
  REQUIRE(back.ok());
  REQUIRE(back->interrupt_status == 3);
  REQUIRE(back->transport.config_generation == 7);
  REQUIRE(back->transport.queues.size() == 2);
  const virtio::QueueState& q = back->transport.queues[0];
  REQUIRE(q.next_avail == 65535);
  REQUIRE(q.avail_pos == 5);
  REQUIRE_FALSE(q.avail_wrap);
  REQUIRE(q.in_flight == std::vector<uint16_t>{0, 2, 0, 0, 1, 0, 0, 0});

  virtio::PciState p;
  p.transport = SomeTransport();
  p.config.assign(256, 0x5a);
  p.msix = {{0xfee00000, 0x41, false, true}, {}, {}};
  p.queue_vectors = {1, virtio::kMsixNoVector};
  p.config_vector = 0;
  p.queue_sel = 1;
  auto pb = DecodePci(EncodePci(p));
  REQUIRE(pb.ok());
  REQUIRE(pb->config == p.config);
  REQUIRE(pb->msix[0].pending);
  REQUIRE(pb->msix[0].data == 0x41);
  REQUIRE(pb->queue_vectors == p.queue_vectors);
}

TEST_CASE("virtio codec: numbers that do not fit are refused naming the field") {
  v1::VirtioMmio m = EncodeMmio({SomeTransport(), 0, 0, 0, 0});
  m.mutable_transport()->mutable_queues(1)->set_next_used(70000);
  auto s = DecodeMmio(m);
  REQUIRE_FALSE(s.ok());
  REQUIRE_THAT(std::string(s.status().message()),
               Catch::Contains("queues[1]: next_used: 70000 does not fit 16 bits"));
  m = EncodeMmio({SomeTransport(), 0, 0, 0, 0});
  m.mutable_transport()->set_config_generation(256);
  REQUIRE_THAT(std::string(DecodeMmio(m).status().message()),
               Catch::Contains("config_generation"));
  m.mutable_transport()->set_config_generation(1);
  for (int i = 0; i < 70; ++i) m.mutable_transport()->add_queues();
  REQUIRE_THAT(std::string(DecodeMmio(m).status().message()), Catch::Contains("queues: "));
  v1::VirtioPci p;
  p.set_config_vector(1 << 20);
  REQUIRE_THAT(std::string(DecodePci(p).status().message()), Catch::Contains("config_vector"));
  p.set_config_vector(0);
  p.set_config(std::string(5000, 'x'));
  REQUIRE_THAT(std::string(DecodePci(p).status().message()), Catch::Contains("config"));
}
