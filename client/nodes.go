package client

import (
	"context"
	"net/http"
)

// Nodes lists the fleet's nodes, up and down (GET /v1/nodes; admin only).
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var list NodeList
	if err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Nodes, nil
}
