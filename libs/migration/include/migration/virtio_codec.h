// Conversions between libs/virtio's snapshot state (queues, transports,
// the balloon) and the kindling.migration.v1 virtio messages. Decoding
// checks what must fit narrower types or bounded lists and names the field;
// the transports check the rest (features against the offer, rings against
// guest RAM, vectors against the MSI-X table) when they load the state.
//
//   v1::VirtioMmio msg = EncodeMmio(transport.SaveMmioState());
//   ASSIGN_OR_RETURN(virtio::MmioState s, DecodeMmio(msg));
//   RETURN_IF_ERROR(transport.RestoreMmioState(s));
#ifndef MIGRATION_VIRTIO_CODEC_H_
#define MIGRATION_VIRTIO_CODEC_H_

#include "absl/status/statusor.h"
#include "migration/snapshot.pb.h"
#include "virtio/balloon.h"
#include "virtio/mmio.h"
#include "virtio/pci.h"

namespace migration {

namespace v1 = ::kindling::migration::v1;

inline constexpr int kMaxVirtioQueues = 64;
inline constexpr size_t kMaxFailureBytes = 4096;

v1::VirtioMmio EncodeMmio(const virtio::MmioState& state);
absl::StatusOr<virtio::MmioState> DecodeMmio(const v1::VirtioMmio& msg);

v1::VirtioPci EncodePci(const virtio::PciState& state);
absl::StatusOr<virtio::PciState> DecodePci(const v1::VirtioPci& msg);

v1::VirtioBalloon EncodeBalloon(const virtio::BalloonState& state);
virtio::BalloonState DecodeBalloon(const v1::VirtioBalloon& msg);

}  // namespace migration

#endif  // MIGRATION_VIRTIO_CODEC_H_
