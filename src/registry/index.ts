export { contentHash, loadServiceFile, toRouterPath } from './load-service.ts';
export {
  createMockResponder,
  MOCK_HEADER,
  type MockContext,
  type MockResponder,
  type MockResponse,
} from './mock.ts';
export {
  buildRouteTable,
  describeRoutes,
  type RouteDescription,
  type RouteMatch,
  type RouteTable,
} from './route-table.ts';
export type * from './types.ts';
export { resolveSettings, slugify, type XPortcullis, XPortcullisSchema } from './x-portcullis.ts';
