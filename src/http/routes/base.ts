import { Router } from 'express';

/** Route path, exported so that the app can tell an unsupported method from an unknown path. */
export const BASE_PATH = /^\/v2\/?$/;

export function baseRoutes(): Router {
  const r = Router();
  r.get(BASE_PATH, (_req, res) => {
    res.locals.route = '/v2/';
    res.json({});
  });
  return r;
}
