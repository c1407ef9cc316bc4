// The "Node loopback limit": a bare node:http server with no framework, no hashing and no bookkeeping, doing the
// least work each benchmark figure needs. Run as a child process (like the registries), so it gets its own event
// loop and the client measures it through the same loopback path. --workers N (N > 1) serves the port from N
// cluster workers, as buildcached does by default, so its figures compare like with like.
//   HEAD /head          200 with blob-like headers, no body
//   GET  /file?bytes=N  streams the first N bytes of --file
//   PUT  /sink          reads and discards the body (loopback receive; the disk half of a push is measured apart)
import cluster from 'node:cluster';
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';

const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const file = arg('--file');
const workers = Number(arg('--workers') ?? 1);

if (cluster.isPrimary && workers > 1) {
  cluster.setupPrimary({ silent: true });
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on('message', ({ url }) => {
      if (++ready === workers) process.stdout.write(`${JSON.stringify({ url })}\n`);
    });
  }
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    process.exit(0);
  });
} else {
  serve();
}

function serve() {
  const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    const [path, query = ''] = req.url.split('?');
    if (req.method === 'HEAD' && path === '/head') {
      res.writeHead(200, {
        'Content-Length': '1048576',
        'Content-Type': 'application/octet-stream',
        'Docker-Content-Digest': 'sha256:0000000000000000000000000000000000000000000000000000000000000000',
      });
      res.end();
    } else if (req.method === 'GET' && path === '/file') {
      const bytes = Number(new URLSearchParams(query).get('bytes'));
      res.writeHead(200, { 'Content-Length': String(bytes), 'Content-Type': 'application/octet-stream' });
      pipeline(createReadStream(file, { start: 0, end: bytes - 1, highWaterMark: 1024 * 1024 }), res).catch(() => {});
    } else if (path === '/sink') {
      req.on('data', () => {});
      req.on('end', () => res.writeHead(201, { 'Content-Length': '0' }).end());
    } else {
      res.writeHead(404, { 'Content-Length': '0' }).end();
    }
  });
  // Cluster workers asking for port 0 all get the one the primary picked.
  server.listen(0, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${server.address().port}`;
    if (cluster.isWorker) process.send({ url });
    else process.stdout.write(`${JSON.stringify({ url })}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)) && server.closeAllConnections());
}
