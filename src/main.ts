#!/usr/bin/env node
import cluster from 'node:cluster';

// A worker serves with the configuration its primary validated, and loads only what serves requests: no CLI parser,
// YAML reader or schema library in every process, and no worker reading a config file edited since the daemon started.
await (cluster.isWorker ? import('./process/worker-entry.js') : import('./cli/program.js'));
