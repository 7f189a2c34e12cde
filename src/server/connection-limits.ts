import type { ChannelOptions } from '@grpc/grpc-js';
import type { NodeConfig } from '../config/schema.js';
import { channelzOff } from '../common/grpc-options.js';

/**
 * The grpc-js server options that bound what one connection can hold on either port
 * (`connections.*` in the config): streams open at once, how long it may sit with no call, and
 * how long a client that stopped answering pings (gone without closing, or paused) keeps it.
 * Without them one connection could open streams without limit and a dead client's connection,
 * with its descriptors and buffers, stayed until the kernel gave up on it, hours later.
 */
export function connectionLimitOptions(connections: NodeConfig['connections']): ChannelOptions {
  return {
    ...channelzOff,
    'grpc.max_concurrent_streams': connections.maxConcurrentStreams,
    'grpc.max_connection_idle_ms': connections.idleTimeoutMs,
    'grpc.keepalive_time_ms': connections.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': connections.keepaliveTimeoutMs,
  };
}
