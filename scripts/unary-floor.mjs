#!/usr/bin/env node
// The per-call floor of a unary gRPC call on this machine, without kvstore: a server that answers
// kvstore.v1.KVStore/Get with one fixed Value (found, 100 bytes) and does nothing else, built on
// either bare node:http2 or bare grpc-js. Load it with the same generator as a kvstore node and
// compare the server CPU per call (BENCHMARKS.md, "What this machine allows"); kvctl needs npm run build:
//
//   node scripts/unary-floor.mjs <http2|grpc-js> <port> &
//   node dist/src/cli/kvctl.js bench get --endpoints 127.0.0.1:<port> --server-pids <its pid> \
//     --client raw --no-preload --concurrency 64 --duration 6
//
// A measuring tool, not part of the product: it checks nothing about the request beyond its
// path and frames, and listens on 127.0.0.1 only. It stops on SIGINT or SIGTERM.
import http2 from 'node:http2';
import grpc from '@grpc/grpc-js';

const [kind, portText] = process.argv.slice(2);
const port = Number(portText);
if (!['http2', 'grpc-js'].includes(kind) || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node scripts/unary-floor.mjs <http2|grpc-js> <port>   (port 0: an ephemeral one, printed)');
  process.exit(2);
}

const GET_PATH = '/kvstore.v1.KVStore/Get';
const VALUE_BYTES = 100;
/**
 * kvstore.v1.Value { found: true, value: 100 bytes of 7 }, encoded by hand so the script needs no
 * build: field 1 (found) varint 1, field 2 (value) length-delimited. test/unit/unary-floor.test.ts
 * decodes it with gen/'s codec.
 */
const answer = Buffer.concat([Buffer.from([0x08, 0x01, 0x12, VALUE_BYTES]), Buffer.alloc(VALUE_BYTES, 7)]);

/** One length-prefixed gRPC message: flag byte 0 (not compressed), 4-byte big-endian length. */
function framed(message) {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}
const framedAnswer = framed(answer);

function serveBareHttp2() {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    if (headers[':path'] !== GET_PATH) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12', 'grpc-message': 'unimplemented' }, { endStream: true });
      return;
    }
    // The request is one small message; answer once it has been read in full.
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(framedAnswer);
    });
    stream.on('error', () => {});
  });
  server.listen(port, '127.0.0.1', () => console.log(`bare node:http2 floor server on 127.0.0.1:${server.address().port}, pid ${process.pid}`));
  return () => server.close();
}

function serveBareGrpcJs() {
  const server = new grpc.Server({ 'grpc.enable_channelz': 0 });
  const passThrough = (buffer) => buffer;
  server.register(GET_PATH, (_call, callback) => callback(null, answer), passThrough, passThrough, 'unary');
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
    if (error) {
      console.error(error.message);
      process.exit(1);
    }
    console.log(`bare grpc-js floor server on 127.0.0.1:${bound}, pid ${process.pid}`);
  });
  return () => server.forceShutdown();
}

const stop = kind === 'http2' ? serveBareHttp2() : serveBareGrpcJs();
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => { stop(); process.exit(0); });
