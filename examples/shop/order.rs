//! The shop example's code for `Order`: the body of its action `place`, which changes
//! several records in one transaction.
//!
//! Start a project with it: `lithair-gen new shop --schema examples/shop.yaml --handlers
//! examples/shop`. From then on the file is yours, as any handler file is.

use lithair_runtime::prelude::*;

use crate::generated::order::*;
use crate::generated::product::Product;

/// The handlers of `Order`.
#[derive(Debug, Default)]
pub struct OrderHandlers;

impl Hooks<Order> for OrderHandlers {}

impl OrderActions for OrderHandlers {
    /// `POST /api/orders/{id}/place`: takes one unit of each ordered product from its
    /// stock and marks the order paid, all in one transaction. A product out of stock is
    /// a 409; so is a product or the order changed by another write while this ran. In
    /// either case nothing is written.
    async fn place(&self, ctx: ActionContext, id: Uuid, _body: Value) -> Result<Order, ApiError> {
        let mut order = ctx
            .get::<Order>(id)?
            .ok_or_else(|| ApiError::not_found(format!("no order {id}")))?;
        if order.status != OrderStatus::Pending {
            return Err(ApiError::conflict(
                "status",
                "only a pending order can be placed",
            ));
        }
        for product_id in &order.products {
            // A product ordered twice is read back as this transaction left it.
            let mut product = ctx.get::<Product>(*product_id)?.ok_or_else(|| {
                ApiError::unprocessable("products", "ref", format!("no product {product_id}"))
            })?;
            if product.stock < 1 {
                return Err(ApiError::conflict(
                    "products",
                    format!("{} ({}) is out of stock", product.name, product.sku),
                ));
            }
            product.stock -= 1;
            ctx.update(&product)?;
        }
        order.status = OrderStatus::Paid;
        order.placed_at = Some(Utc::now());
        ctx.update(&order)?;
        ctx.commit().await?.get(id)
    }
}
