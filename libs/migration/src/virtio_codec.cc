#include "migration/virtio_codec.h"

#include "absl/strings/str_cat.h"
#include "kindling/status_macros.h"

namespace migration {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::StatusOr<uint16_t> U16(uint32_t v, absl::string_view field) {
  if (v > 0xffff) return Invalid(field, absl::StrCat(v, " does not fit 16 bits"));
  return static_cast<uint16_t>(v);
}

v1::VirtioQueue EncodeQueue(const virtio::QueueState& q) {
  v1::VirtioQueue m;
  m.set_size(q.size);
  m.set_ready(q.ready);
  m.set_desc(q.desc);
  m.set_avail(q.avail);
  m.set_used(q.used);
  m.set_active(q.active);
  m.set_next_avail(q.next_avail);
  m.set_next_used(q.next_used);
  m.set_avail_pos(q.avail_pos);
  m.set_used_pos(q.used_pos);
  m.set_avail_wrap(q.avail_wrap);
  m.set_used_wrap(q.used_wrap);
  for (uint16_t n : q.in_flight) m.add_in_flight(n);
  return m;
}

absl::StatusOr<virtio::QueueState> DecodeQueue(const v1::VirtioQueue& m) {
  virtio::QueueState q;
  ASSIGN_OR_RETURN(q.size, U16(m.size(), "size"));
  q.ready = m.ready();
  q.desc = m.desc();
  q.avail = m.avail();
  q.used = m.used();
  q.active = m.active();
  ASSIGN_OR_RETURN(q.next_avail, U16(m.next_avail(), "next_avail"));
  ASSIGN_OR_RETURN(q.next_used, U16(m.next_used(), "next_used"));
  ASSIGN_OR_RETURN(q.avail_pos, U16(m.avail_pos(), "avail_pos"));
  ASSIGN_OR_RETURN(q.used_pos, U16(m.used_pos(), "used_pos"));
  q.avail_wrap = m.avail_wrap();
  q.used_wrap = m.used_wrap();
  if (m.in_flight_size() > (1 << 15)) {
    return Invalid("in_flight", absl::StrCat(m.in_flight_size(), " entries"));
  }
  for (uint32_t n : m.in_flight()) {
    ASSIGN_OR_RETURN(uint16_t v, U16(n, "in_flight"));
    q.in_flight.push_back(v);
  }
  return q;
}

v1::VirtioTransport EncodeTransport(const virtio::TransportState& t) {
  v1::VirtioTransport m;
  m.set_status(t.status);
  m.set_driver_features(t.driver_features);
  m.set_config_generation(t.config_generation);
  m.set_failure(t.failure);
  for (const virtio::QueueState& q : t.queues) *m.add_queues() = EncodeQueue(q);
  return m;
}

absl::StatusOr<virtio::TransportState> DecodeTransport(const v1::VirtioTransport& m) {
  virtio::TransportState t;
  t.status = m.status();
  t.driver_features = m.driver_features();
  if (m.config_generation() > 0xff) {
    return Invalid("config_generation", absl::StrCat(m.config_generation(), " is above 255"));
  }
  t.config_generation = static_cast<uint8_t>(m.config_generation());
  if (m.failure().size() > kMaxFailureBytes) {
    return Invalid("failure", absl::StrCat(m.failure().size(), " bytes"));
  }
  t.failure = m.failure();
  if (m.queues_size() > kMaxVirtioQueues) {
    return Invalid("queues", absl::StrCat(m.queues_size(), " is more than ", kMaxVirtioQueues));
  }
  for (int i = 0; i < m.queues_size(); ++i) {
    absl::StatusOr<virtio::QueueState> q = DecodeQueue(m.queues(i));
    if (!q.ok()) return Invalid(absl::StrCat("queues[", i, "]"), q.status().message());
    t.queues.push_back(*std::move(q));
  }
  return t;
}

}  // namespace

v1::VirtioMmio EncodeMmio(const virtio::MmioState& s) {
  v1::VirtioMmio m;
  *m.mutable_transport() = EncodeTransport(s.transport);
  m.set_interrupt_status(s.interrupt_status);
  m.set_queue_sel(s.queue_sel);
  m.set_device_features_sel(s.device_features_sel);
  m.set_driver_features_sel(s.driver_features_sel);
  return m;
}

absl::StatusOr<virtio::MmioState> DecodeMmio(const v1::VirtioMmio& m) {
  virtio::MmioState s;
  ASSIGN_OR_RETURN(s.transport, DecodeTransport(m.transport()));
  s.interrupt_status = m.interrupt_status();
  s.queue_sel = m.queue_sel();
  s.device_features_sel = m.device_features_sel();
  s.driver_features_sel = m.driver_features_sel();
  return s;
}

v1::VirtioPci EncodePci(const virtio::PciState& s) {
  v1::VirtioPci m;
  *m.mutable_transport() = EncodeTransport(s.transport);
  m.set_config(std::string(s.config.begin(), s.config.end()));
  for (const virtio::PciMsixEntryState& e : s.msix) {
    v1::MsixEntry* me = m.add_msix();
    me->set_address(e.address);
    me->set_data(e.data);
    me->set_masked(e.masked);
    me->set_pending(e.pending);
  }
  for (uint16_t v : s.queue_vectors) m.add_queue_vectors(v);
  m.set_config_vector(s.config_vector);
  m.set_isr(s.isr);
  m.set_device_features_sel(s.device_features_sel);
  m.set_driver_features_sel(s.driver_features_sel);
  m.set_queue_sel(s.queue_sel);
  return m;
}

absl::StatusOr<virtio::PciState> DecodePci(const v1::VirtioPci& m) {
  virtio::PciState s;
  ASSIGN_OR_RETURN(s.transport, DecodeTransport(m.transport()));
  if (m.config().size() > 4096) return Invalid("config", "more than 4096 bytes");
  s.config.assign(m.config().begin(), m.config().end());
  if (m.msix_size() > kMaxVirtioQueues + 1 || m.queue_vectors_size() > kMaxVirtioQueues) {
    return Invalid("msix", "more entries than a device has queues");
  }
  for (const v1::MsixEntry& e : m.msix()) {
    s.msix.push_back({e.address(), e.data(), e.masked(), e.pending()});
  }
  for (uint32_t v : m.queue_vectors()) {
    ASSIGN_OR_RETURN(uint16_t vec, U16(v, "queue_vectors"));
    s.queue_vectors.push_back(vec);
  }
  ASSIGN_OR_RETURN(s.config_vector, U16(m.config_vector(), "config_vector"));
  s.isr = m.isr();
  s.device_features_sel = m.device_features_sel();
  s.driver_features_sel = m.driver_features_sel();
  ASSIGN_OR_RETURN(s.queue_sel, U16(m.queue_sel(), "queue_sel"));
  return s;
}

v1::VirtioBalloon EncodeBalloon(const virtio::BalloonState& s) {
  v1::VirtioBalloon m;
  m.set_target_pages(s.target_pages);
  m.set_actual_pages(s.actual_pages);
  return m;
}

virtio::BalloonState DecodeBalloon(const v1::VirtioBalloon& m) {
  return {m.target_pages(), m.actual_pages()};
}

}  // namespace migration
