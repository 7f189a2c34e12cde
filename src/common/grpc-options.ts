/**
 * grpc-js option shared by every server and channel kvstore makes: channelz off. grpc-js keeps
 * channelz statistics by default (a call tracker per call and per connection, counters per
 * message), which costs every call and every stream message and which nothing here reads: no
 * channelz service is served, and /metrics counts calls itself.
 */
export const channelzOff = { 'grpc.enable_channelz': 0 } as const;
