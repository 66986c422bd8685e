//! The shop example's code for `Product`: the body of its action `restock`.
//!
//! Start a project with it: `lithair-gen new shop --schema examples/shop.yaml --handlers
//! examples/shop`. From then on the file is yours, as any handler file is.

use lithair_runtime::prelude::*;

use crate::generated::product::*;

/// The handlers of `Product`.
#[derive(Debug, Default)]
pub struct ProductHandlers;

impl Hooks<Product> for ProductHandlers {}

impl ProductActions for ProductHandlers {
    /// `POST /api/products/{id}/restock`: adds `quantity` units to the stock. Written
    /// against the version read: a change by another write in between makes it a 409
    /// (run it again), never a lost update.
    async fn restock(
        &self,
        ctx: ActionContext,
        id: Uuid,
        input: ProductRestockInput,
    ) -> Result<Product, ApiError> {
        let mut product = ctx
            .get::<Product>(id)?
            .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
        product.stock += input.quantity;
        ctx.update(&product)?;
        ctx.commit().await?.get(id)
    }
}
