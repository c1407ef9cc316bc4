import type { Config } from '../config/schema.js';
import { createLogger } from '../observability/logger.js';
import { exitWith } from './failure.js';
import { WORKER_CONFIG_ENV } from './messages.js';
import { runWorker } from './worker.js';

// The primary validated this configuration and hands it over whole (see startPrimary).
const text = process.env[WORKER_CONFIG_ENV];
if (!text) exitWith(new Error(`a worker needs ${WORKER_CONFIG_ENV} from its primary`));
const config = JSON.parse(text) as Config;
runWorker(config, createLogger(config.log.level, 1, config.log.format)).catch((e: unknown) => exitWith(e));
