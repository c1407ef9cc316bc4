// Runs s3rver (a real S3-compatible server) for the tests, in its own process: it needs
// `node --openssl-legacy-provider` for listings on Node >= 17. Arguments: directory, port (0 = any), buckets...
// Prints one JSON line {"port": N} once it listens; stops on SIGTERM.
const S3rver = require('s3rver');

const [directory, port, ...buckets] = process.argv.slice(2);
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  configureBuckets: buckets.map((name) => ({ name })),
});
server.run().then(
  (addr) => process.stdout.write(`${JSON.stringify({ port: addr.port })}\n`),
  (err) => {
    process.stderr.write(`s3rver failed: ${err.stack}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => server.close().finally(() => process.exit(0)));
