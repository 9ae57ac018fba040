package redisconn

import (
	"strconv"
	"strings"
)

// ClusterSlots is the number of Redis Cluster hash slots.
const ClusterSlots = 16384

// Slot is the Redis Cluster slot of a key or channel name, as CLUSTER
// KEYSLOT computes it: CRC16 of its hash tag (the part between the first
// "{" and the next "}", when not empty), else of the whole name.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % ClusterSlots)
}

// SpreadTag is the hash tag (without braces) for member i of n that should
// land on its own part of the cluster: base when its slot lies in the i-th
// n-th of the slot space, else the first base.<k> whose slot does. On a
// cluster created with an even slot split (redis-cli --cluster create) the
// n tags then spread evenly over the masters. It is a pure function of its
// arguments, so every node agrees.
func SpreadTag(base string, i, n int) string {
	lo, hi := i*ClusterSlots/n, (i+1)*ClusterSlots/n
	for k := 0; k <= 1<<16; k++ {
		t := base
		if k > 0 {
			t += "." + strconv.Itoa(k)
		}
		if s := int(crc16(t) % ClusterSlots); s >= lo && s < hi {
			return t
		}
	}
	return base // not reached: some k below 2^16 always lands in range
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
