import { Router } from 'express';

export function baseRoutes(): Router {
  const r = Router();
  r.get(/^\/v2\/?$/, (_req, res) => {
    res.locals.route = '/v2/';
    res.json({});
  });
  return r;
}
