import type { FastifyInstance } from 'fastify';

/** One route an application serves: its method and its path as declared (`:params`, `*`). */
export interface ServedRoute {
  method: string;
  url: string;
}

const routes = new WeakMap<object, ServedRoute[]>();

/**
 * Records every route added to `instance` from now on (Fastify's onRoute hook), so the
 * authorisation matrix and the OpenAPI check can list exactly what the application serves.
 * HEAD routes Fastify derives from GET routes are left out: they answer as their GET does.
 */
export function recordRoutes(instance: FastifyInstance): void {
  const list: ServedRoute[] = [];
  routes.set(instance.server, list);
  instance.addHook('onRoute', (route) => {
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) list.push({ method, url: route.url });
  });
}

/** The routes recorded for the application whose Fastify instance is `instance`. */
export function servedRoutes(instance: FastifyInstance): ServedRoute[] {
  const list = routes.get(instance.server) ?? [];
  const gets = new Set(list.filter((r) => r.method === 'GET').map((r) => r.url));
  return list.filter((r) => !(r.method === 'HEAD' && gets.has(r.url)));
}
